//! The node lifecycle controller (kube-controller-manager's node lifecycle controller with
//! KubeVirt's handling of the VMIs on a lost node): a node whose agent has not renewed its
//! Ready condition for the grace period is marked Ready=Unknown, and the VMIs bound to a
//! node in that state are failed (reason `NodeUnresponsive`) and released from the agent's
//! finalizer, so the VM controller can start them again elsewhere as their run strategy
//! says. An agent that comes back re-marks its node Ready and stops any guest whose VMI
//! is gone or bound elsewhere.

use super::clock;
use crate::agent::FINALIZER;
use crate::client::{Api, Client};
use crate::scheduler::cluster::node_of;
use crate::scheduler::runner::set_condition;
use crate::store::{ListOptions, Patch, WriteOptions};
use api::core::node::Node;
use api::kubevirt::condition::Condition;
use api::kubevirt::virtualmachineinstance::{
    PhaseTransitionTimestamp, VirtualMachineInstance, VirtualMachineInstancePhase as Phase,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::chrono::{DateTime, Utc};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// kube-controller-manager's default `--node-monitor-grace-period`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(40);
/// The reason of a VMI failed because its node was lost (KubeVirt's).
pub const NODE_UNRESPONSIVE: &str = "NodeUnresponsive";

fn ready(node: &Node) -> Option<&k8s_openapi::api::core::v1::NodeCondition> {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
}

/// Whether `node` says Ready=True but its last heartbeat is older than `grace` at `now`.
pub fn stale(node: &Node, now: DateTime<Utc>, grace: Duration) -> bool {
    let Some(c) = ready(node).filter(|c| c.status == "True") else {
        return false;
    };
    let grace = k8s_openapi::chrono::Duration::from_std(grace)
        .unwrap_or(k8s_openapi::chrono::Duration::MAX);
    // A node that never posted a heartbeat gets the grace period from its creation, as
    // kube-controller-manager's startup grace does, so a node registered by hand is not
    // lost the instant the controller first sees it.
    match c
        .last_heartbeat_time
        .as_ref()
        .or(c.last_transition_time.as_ref())
        .or(node.metadata.creation_timestamp.as_ref())
    {
        Some(t) => now - t.0 > grace,
        None => true,
    }
}

/// Whether `node` is marked lost (Ready=Unknown).
pub fn lost(node: &Node) -> bool {
    ready(node).is_some_and(|c| c.status == "Unknown")
}

/// The VMIs on lost nodes that still need handling: not yet failed, or still holding the
/// agent's finalizer.
pub fn orphans<'a>(
    vmis: &'a [VirtualMachineInstance],
    lost_nodes: &BTreeSet<String>,
) -> Vec<&'a VirtualMachineInstance> {
    vmis.iter()
        .filter(|v| node_of(v).is_some_and(|n| lost_nodes.contains(n)))
        .filter(|v| {
            let finished = v
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(Phase::is_final);
            let held = v
                .metadata
                .finalizers
                .iter()
                .flatten()
                .any(|f| f == FINALIZER);
            !finished || held
        })
        .collect()
}

async fn mark_unknown(nodes: &Api<Node>, node: &Node) -> Result<(), crate::client::ClientError> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let now = Time(clock::now());
    let mut conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    for c in conditions.iter_mut().filter(|c| c.type_ == "Ready") {
        c.status = "Unknown".into();
        c.reason = Some("NodeStatusUnknown".into());
        c.message = Some("Node agent stopped posting node status.".into());
        c.last_transition_time = Some(now.clone());
    }
    tracing::warn!(node = %name, "node stopped posting status; marking it NotReady");
    nodes
        .patch_status(
            &name,
            Patch::Merge(json!({
                "metadata": {"resourceVersion": node.metadata.resource_version},
                "status": {"conditions": conditions},
            })),
        )
        .await?;
    Ok(())
}

async fn fail(
    client: &Client,
    vmi: &VirtualMachineInstance,
) -> Result<(), crate::client::ClientError> {
    let def = api::resource::find_kind("kubevirt.io", "VirtualMachineInstance")
        .expect("the registry serves VirtualMachineInstance");
    let ns = vmi.metadata.namespace.clone().unwrap_or_default();
    let name = vmi.metadata.name.clone().unwrap_or_default();
    let api: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), def, &ns);
    let mut current = vmi.clone();
    let finished = vmi
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(Phase::is_final);
    if !finished {
        let node = node_of(vmi).unwrap_or_default().to_string();
        let mut status = vmi.status.clone().unwrap_or_default();
        status.phase = Some(Phase::Failed);
        status.reason = Some(NODE_UNRESPONSIVE.into());
        status
            .phase_transition_timestamps
            .push(PhaseTransitionTimestamp {
                phase: Some(Phase::Failed),
                phase_transition_timestamp: Some(Time(clock::now())),
            });
        let mut c = Condition::new("Ready", false);
        c.reason = Some(NODE_UNRESPONSIVE.into());
        c.message = Some(format!("The node {node} is not responding"));
        set_condition(&mut status.conditions, c);
        tracing::warn!(vmi = %format!("{ns}/{name}"), %node, "failing a VMI of a lost node");
        current = api
            .patch_status(
                &name,
                Patch::Merge(json!({
                    "metadata": {"resourceVersion": vmi.metadata.resource_version},
                    "status": status,
                })),
            )
            .await?;
    }
    let finalizers: Vec<String> = current
        .metadata
        .finalizers
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f != FINALIZER)
        .collect();
    if finalizers.len() != current.metadata.finalizers.as_ref().map_or(0, Vec::len) {
        api.patch(
            &name,
            Patch::Merge(json!({"metadata": {
                "resourceVersion": current.metadata.resource_version,
                "finalizers": finalizers}})),
            &WriteOptions::default(),
        )
        .await?;
    }
    Ok(())
}

/// One pass: marks stale nodes, then handles the VMIs of lost nodes.
pub async fn pass(client: &Client, grace: Duration) -> Result<(), crate::client::ClientError> {
    let node_def = api::resource::find_kind("", "Node").expect("the registry serves Node");
    let vmi_def = api::resource::find_kind("kubevirt.io", "VirtualMachineInstance")
        .expect("the registry serves VirtualMachineInstance");
    let nodes: Api<Node> = Api::all(client.clone(), node_def);
    let now = clock::now();
    let mut lost_nodes = BTreeSet::new();
    for n in nodes.list(&ListOptions::default()).await?.items {
        let name = n.metadata.name.clone().unwrap_or_default();
        if stale(&n, now, grace) {
            match mark_unknown(&nodes, &n).await {
                Ok(()) => {
                    lost_nodes.insert(name);
                }
                // The agent wrote a heartbeat meanwhile.
                Err(e) if e.code() == Some(409) => {}
                Err(e) => return Err(e),
            }
        } else if lost(&n) {
            lost_nodes.insert(name);
        }
    }
    if lost_nodes.is_empty() {
        return Ok(());
    }
    let vmis: Api<VirtualMachineInstance> = Api::all(client.clone(), vmi_def);
    let all = vmis.list(&ListOptions::default()).await?.items;
    for v in orphans(&all, &lost_nodes) {
        match fail(client, v).await {
            Ok(()) => {}
            Err(e) if matches!(e.code(), Some(404 | 409)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Runs the controller until `shutdown`, checking about four times per grace period.
pub async fn run(client: Client, grace: Duration, shutdown: CancellationToken) {
    let every = (grace / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Where agents publish their endpoint tokens; a remote agent's node token may not
    // create it (kube-apiserver makes kube-system the same way).
    let mut system_namespace = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !system_namespace {
            match crate::agent::ensure_system_namespace(&client).await {
                Ok(()) => system_namespace = true,
                Err(e) => tracing::warn!("creating the system namespace: {e}"),
            }
        }
        if let Err(e) = pass(&client, grace).await {
            tracing::warn!("node lifecycle pass: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Objects;

    fn node(name: &str, status: &str, heartbeat: DateTime<Utc>) -> Node {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "status": {"conditions": [{"type": "Ready", "status": status,
                "lastHeartbeatTime": Time(heartbeat), "lastTransitionTime": Time(heartbeat)}]},
        }))
        .unwrap()
    }

    #[test]
    fn staleness_and_orphans() {
        let now = clock::now();
        let old = now - k8s_openapi::chrono::Duration::seconds(60);
        assert!(stale(&node("a", "True", old), now, DEFAULT_GRACE));
        assert!(!stale(&node("a", "True", now), now, DEFAULT_GRACE));
        assert!(!stale(&node("a", "Unknown", old), now, DEFAULT_GRACE));
        assert!(lost(&node("a", "Unknown", old)));
        let vmi = |name: &str, node: &str, phase: &str, finalizers: Vec<&str>| {
            serde_json::from_value::<VirtualMachineInstance>(json!({
                "metadata": {"name": name, "namespace": "d", "finalizers": finalizers},
                "spec": {"domain": {"devices": {}}},
                "status": {"nodeName": node, "phase": phase}}))
            .unwrap()
        };
        let vmis = [
            vmi("run", "a", "Running", vec![FINALIZER]),
            vmi("done", "a", "Failed", vec![]),
            vmi("held", "a", "Failed", vec![FINALIZER]),
            vmi("elsewhere", "b", "Running", vec![FINALIZER]),
        ];
        let lost_nodes = BTreeSet::from(["a".to_string()]);
        let names: Vec<_> = orphans(&vmis, &lost_nodes)
            .iter()
            .map(|v| v.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["run", "held"]);
    }

    #[tokio::test]
    async fn a_silent_node_is_lost_and_its_vmis_fail() {
        let client = Client::local(Objects::in_memory().unwrap());
        let node_def = api::resource::find_kind("", "Node").unwrap();
        let vmi_def = api::resource::find_kind("kubevirt.io", "VirtualMachineInstance").unwrap();
        let nodes: Api<Node> = Api::all(client.clone(), node_def);
        let old = clock::now() - k8s_openapi::chrono::Duration::seconds(120);
        nodes
            .create(&node("gone", "True", old), &WriteOptions::default())
            .await
            .unwrap();
        nodes
            .create(
                &node("alive", "True", clock::now()),
                &WriteOptions::default(),
            )
            .await
            .unwrap();
        let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), vmi_def, "default");
        for (name, on) in [("v1", "gone"), ("v2", "alive")] {
            let v: VirtualMachineInstance = serde_json::from_value(json!({
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                "metadata": {"name": name, "finalizers": [FINALIZER]},
                "spec": {"domain": {"devices": {}, "memory": {"guest": "64Mi"}}}}))
            .unwrap();
            vmis.create(&v, &WriteOptions::default()).await.unwrap();
            vmis.patch_status(
                name,
                Patch::Merge(json!({"status": {"nodeName": on, "phase": "Running"}})),
            )
            .await
            .unwrap();
        }
        pass(&client, DEFAULT_GRACE).await.unwrap();
        let gone = nodes.get("gone").await.unwrap();
        assert!(lost(&gone));
        assert!(!lost(&nodes.get("alive").await.unwrap()));
        let v1 = vmis.get("v1").await.unwrap();
        let s = v1.status.unwrap();
        assert_eq!(s.phase, Some(Phase::Failed));
        assert_eq!(s.reason.as_deref(), Some(NODE_UNRESPONSIVE));
        assert!(v1.metadata.finalizers.unwrap_or_default().is_empty());
        let v2 = vmis.get("v2").await.unwrap();
        assert_eq!(v2.status.unwrap().phase, Some(Phase::Running));
        // A second pass finds nothing more to do.
        pass(&client, DEFAULT_GRACE).await.unwrap();
    }
}
