//! The scheduling loop: watches nodes and VMIs, and after every batch of changes (and on a
//! periodic resync) tries to place each unscheduled VMI with [`super::schedule`]. A placed
//! VMI is bound by writing `status.nodeName`, phase Scheduled and the `kubevirt.io/nodeName`
//! label; an unplaceable one gets condition PodScheduled=False (reason Unschedulable).

use super::{cluster, schedule};
use crate::client::{Api, Client, ClientError};
use crate::controller::event::EventType::{self, Normal, Warning};
use crate::controller::event::{reference_meta, Recorder};
use crate::controller::reflector::{reflect, Cache};
use crate::store::{Patch, WriteOptions};
use api::core::node::Node;
use api::kubevirt::condition::Condition;
use api::kubevirt::virtualmachineinstance::{VirtualMachineInstance, VirtualMachineInstancePhase};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The label KubeVirt sets on a VMI (and its pod) naming its node.
pub const NODE_NAME_LABEL: &str = "kubevirt.io/nodeName";
/// How often every unscheduled VMI is retried even without changes.
pub const RESYNC: Duration = Duration::from_secs(30);
/// The scheduler names this scheduler answers to (unset means the default).
const SCHEDULER_NAMES: &[&str] = &["default-scheduler", "monovirt"];

/// Errors of one binding or status write.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("Writing VMI {0} failed")]
    Write(String, #[source] ClientError),
    #[error("VMI status does not encode")]
    Encode(#[source] serde_json::Error),
}

/// Whether `vmi` waits for a node: not deleted, no node, phase unset or Pending/Scheduling,
/// and meant for this scheduler.
pub fn is_unscheduled(vmi: &VirtualMachineInstance) -> bool {
    let phase = vmi.status.as_ref().and_then(|s| s.phase);
    vmi.metadata.deletion_timestamp.is_none()
        && cluster::node_of(vmi).is_none()
        && matches!(
            phase,
            None | Some(
                VirtualMachineInstancePhase::Pending | VirtualMachineInstancePhase::Scheduling
            )
        )
        && vmi
            .spec
            .scheduler_name
            .as_deref()
            .is_none_or(|n| n.is_empty() || SCHEDULER_NAMES.contains(&n))
}

/// Runs the scheduler until `shutdown`.
pub async fn run(client: Client, shutdown: CancellationToken) {
    let vmi_def = api::resource::find_kind("kubevirt.io", "VirtualMachineInstance")
        .expect("the registry serves VirtualMachineInstance");
    let node_def = api::resource::find_kind("", "Node").expect("the registry serves Node");
    let vmis: Cache<VirtualMachineInstance> = Cache::default();
    let nodes: Cache<Node> = Cache::default();
    let (vmi_tx, mut vmi_rx) = mpsc::unbounded_channel();
    let (node_tx, mut node_rx) = mpsc::unbounded_channel();
    tokio::spawn(reflect(
        Api::all(client.clone(), vmi_def),
        vmis.clone(),
        vmi_tx,
        shutdown.clone(),
    ));
    tokio::spawn(reflect(
        Api::all(client.clone(), node_def),
        nodes.clone(),
        node_tx,
        shutdown.clone(),
    ));
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            Some(_) = vmi_rx.recv() => {}
            Some(_) = node_rx.recv() => {}
            _ = resync.tick() => {}
        }
        // One pass for a whole batch of changes.
        while vmi_rx.try_recv().is_ok() || node_rx.try_recv().is_ok() {}
        let node_list: Vec<Node> = nodes.list().iter().map(|n| (**n).clone()).collect();
        let mut vmi_list: Vec<VirtualMachineInstance> =
            vmis.list().iter().map(|v| (**v).clone()).collect();
        if let Err(e) = pass(&client, vmi_def, &node_list, &mut vmi_list).await {
            tracing::warn!("scheduling pass: {e}");
        }
    }
}

/// Schedules every unscheduled VMI in `vmis` (oldest first), updating `vmis` with each
/// placement so later VMIs of the pass see it.
///
/// The decisions are made one after the other, as each one counts the ones before it; the
/// writes that carry them out (the binding or the Unschedulable condition, then the Event)
/// run concurrently, so a burst of N VMIs waits for a few durable store flushes shared by
/// all of them rather than for 3·N flushes in a row. Each VMI's own writes stay in order,
/// and each still carries its resourceVersion: a VMI changed meanwhile is a conflict
/// (skipped: the watch brings it back for the next pass).
pub async fn pass(
    client: &Client,
    vmi_def: &'static api::resource::ResourceDef,
    nodes: &[Node],
    vmis: &mut [VirtualMachineInstance],
) -> Result<(), SchedulerError> {
    let mut order: Vec<usize> = (0..vmis.len())
        .filter(|&i| is_unscheduled(&vmis[i]))
        .collect();
    order.sort_by(|&a, &b| {
        let t = |i: usize| vmis[i].metadata.creation_timestamp.clone().map(|t| t.0);
        t(a).cmp(&t(b))
    });
    let mut writes = tokio::task::JoinSet::new();
    for i in order {
        let vmi = vmis[i].clone();
        let ns = vmi.metadata.namespace.clone().unwrap_or_default();
        let api: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), vmi_def, &ns);
        let client = client.clone();
        match schedule(&vmi, nodes, vmis) {
            Ok(node) => {
                // Later decisions of this pass count it on its node.
                vmis[i]
                    .status
                    .get_or_insert_with(Default::default)
                    .node_name = Some(node.clone());
                writes.spawn(async move { bind_and_record(&client, &api, &vmi, &node).await });
            }
            Err(unschedulable) => {
                let message = unschedulable.to_string();
                writes
                    .spawn(async move { mark_unschedulable(&client, &api, &vmi, &message).await });
            }
        }
    }
    // The first failure is the pass's result; any further ones are logged here.
    let mut result = Ok(());
    while let Some(done) = writes.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) if result.is_ok() => result = Err(e),
            Ok(Err(e)) => tracing::warn!("scheduling: {e}"),
            Err(e) => tracing::error!("a scheduler write task failed: {e}"),
        }
    }
    result
}

/// Binds `vmi` to `node` and records the Scheduled Event. A VMI changed or deleted
/// meanwhile (409, 404) is left for the next pass, which the watch brings.
async fn bind_and_record(
    client: &Client,
    api: &Api<VirtualMachineInstance>,
    vmi: &VirtualMachineInstance,
    node: &str,
) -> Result<(), SchedulerError> {
    let ns = vmi.metadata.namespace.as_deref().unwrap_or_default();
    let name = vmi.metadata.name.as_deref().unwrap_or_default();
    tracing::debug!(vmi = %format!("{ns}/{name}"), %node, "binding");
    match bind(api, vmi, node).await {
        Ok(bound) => {
            let message = format!("Successfully assigned {ns}/{name} to {node}");
            record_event(
                client.clone(),
                &bound,
                Normal,
                "Scheduled",
                &message,
                Some(node),
            )
            .await;
            Ok(())
        }
        Err(SchedulerError::Write(_, e)) if matches!(e.code(), Some(404 | 409)) => Ok(()),
        Err(e) => Err(e),
    }
}

fn now() -> Time {
    Time(crate::controller::clock::now())
}

/// Binds `vmi` to `node`: the label, then status nodeName, phase Scheduled and its
/// transition time; PodScheduled becomes True.
async fn bind(
    api: &Api<VirtualMachineInstance>,
    vmi: &VirtualMachineInstance,
    node: &str,
) -> Result<VirtualMachineInstance, SchedulerError> {
    let name = vmi.metadata.name.clone().unwrap_or_default();
    let write = |e| SchedulerError::Write(name.clone(), e);
    let labelled = api
        .patch(
            &name,
            Patch::Merge(json!({"metadata": {
                "resourceVersion": vmi.metadata.resource_version,
                "labels": {NODE_NAME_LABEL: node}}})),
            &WriteOptions::default(),
        )
        .await
        .map_err(write)?;
    let mut status = vmi.status.clone().unwrap_or_default();
    status.node_name = Some(node.to_string());
    status.phase = Some(VirtualMachineInstancePhase::Scheduled);
    status.phase_transition_timestamps.push(
        api::kubevirt::virtualmachineinstance::PhaseTransitionTimestamp {
            phase: Some(VirtualMachineInstancePhase::Scheduled),
            phase_transition_timestamp: Some(now()),
        },
    );
    set_condition(&mut status.conditions, Condition::new("PodScheduled", true));
    let status = serde_json::to_value(&status).map_err(SchedulerError::Encode)?;
    api.patch_status(
        &name,
        Patch::Merge(json!({
            "metadata": {"resourceVersion": labelled.metadata.resource_version},
            "status": status,
        })),
    )
    .await
    .map_err(write)
}

/// Replaces the condition of the same type, keeping its transition time when the status
/// did not change.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            new.last_transition_time = if old.status == new.status {
                old.last_transition_time.clone()
            } else {
                Some(now())
            };
            *old = new;
        }
        None => {
            new.last_transition_time = Some(now());
            conditions.push(new);
        }
    }
}

/// Sets PodScheduled=False, reason Unschedulable, unless it already says `message`.
async fn mark_unschedulable(
    client: &Client,
    api: &Api<VirtualMachineInstance>,
    vmi: &VirtualMachineInstance,
    message: &str,
) -> Result<(), SchedulerError> {
    let mut status = vmi.status.clone().unwrap_or_default();
    let current = api::kubevirt::condition::find(&status.conditions, "PodScheduled");
    if current.is_some_and(|c| !c.is_true() && c.message.as_deref() == Some(message)) {
        return Ok(());
    }
    let name = vmi.metadata.name.clone().unwrap_or_default();
    tracing::info!(vmi = %name, "{message}");
    let mut cond = Condition::new("PodScheduled", false);
    cond.reason = Some("Unschedulable".into());
    cond.message = Some(message.to_string());
    set_condition(&mut status.conditions, cond);
    if status.phase.is_none() {
        status.phase = Some(VirtualMachineInstancePhase::Pending);
    }
    let status: Value = serde_json::to_value(&status).map_err(SchedulerError::Encode)?;
    api.patch_status(&name, Patch::Merge(json!({"status": status})))
        .await
        .map_err(|e| SchedulerError::Write(name.clone(), e))?;
    record_event(
        client.clone(),
        vmi,
        Warning,
        "FailedScheduling",
        message,
        None,
    )
    .await;
    Ok(())
}

/// The component named as the source of the scheduler's Events.
pub const COMPONENT: &str = "monovirt-scheduler";

/// Records an Event about `vmi` as kube-scheduler does for pods (`Scheduled` on `node`,
/// `FailedScheduling`). A failure to record is logged, never fatal.
async fn record_event(
    client: Client,
    vmi: &VirtualMachineInstance,
    type_: EventType,
    reason: &str,
    message: &str,
    node: Option<&str>,
) {
    let involved = reference_meta("kubevirt.io/v1", "VirtualMachineInstance", &vmi.metadata);
    Recorder::new(client, COMPONENT)
        .record_on(&involved, type_, reason, message, node)
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testing::{node, placed, vmi};
    use crate::store::Objects;

    #[test]
    fn unscheduled_means_no_node_not_deleted_and_ours() {
        assert!(is_unscheduled(&vmi("v", json!({}), json!({}))));
        assert!(!is_unscheduled(&placed(
            vmi("v", json!({}), json!({})),
            "n"
        )));
        let other = vmi("v", json!({}), json!({"schedulerName": "someone-else"}));
        assert!(!is_unscheduled(&other));
        let mut gone = vmi("v", json!({}), json!({}));
        gone.metadata.deletion_timestamp = Some(Time(crate::controller::clock::now()));
        assert!(!is_unscheduled(&gone));
    }

    #[test]
    fn set_condition_keeps_the_transition_time_of_an_unchanged_status() {
        let mut cs = Vec::new();
        set_condition(&mut cs, Condition::new("PodScheduled", false));
        let first = cs[0].last_transition_time.clone();
        let mut again = Condition::new("PodScheduled", false);
        again.message = Some("m".into());
        set_condition(&mut cs, again);
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].last_transition_time, first);
        assert_eq!(cs[0].message.as_deref(), Some("m"));
    }

    /// One pass over an in-memory store: the first VMI is bound, the second (which no longer
    /// fits once the first is counted) gets PodScheduled=False.
    #[tokio::test]
    async fn pass_binds_then_counts_the_binding() {
        let client = Client::local(Objects::in_memory().unwrap());
        let def = api::resource::find_kind("kubevirt.io", "VirtualMachineInstance").unwrap();
        let api: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), def, "default");
        let mut vmis = Vec::new();
        for name in ["a", "b"] {
            let mut v = vmi(name, json!({}), json!({}));
            v.metadata.uid = None;
            vmis.push(api.create(&v, &WriteOptions::default()).await.unwrap());
        }
        let nodes = [node("n1", "1", "200Mi", json!({}))];
        pass(&client, def, &nodes, &mut vmis).await.unwrap();
        let a = api.get("a").await.unwrap();
        let status = a.status.clone().unwrap();
        assert_eq!(status.node_name.as_deref(), Some("n1"));
        assert_eq!(status.phase, Some(VirtualMachineInstancePhase::Scheduled));
        assert_eq!(a.metadata.labels.as_ref().unwrap()[NODE_NAME_LABEL], "n1");
        let b = api.get("b").await.unwrap();
        let cond = b.status.clone().unwrap().conditions[0].clone();
        assert_eq!(cond.reason.as_deref(), Some("Unschedulable"));
        assert_eq!(
            cond.message.as_deref(),
            Some("0/1 nodes are available: 1 Insufficient memory.")
        );
        let events_def = api::resource::find_kind("", "Event").unwrap();
        let events: Api<Value> = Api::namespaced(client.clone(), events_def, "default");
        let list = events.list(&Default::default()).await.unwrap();
        let mut seen: Vec<(String, String)> = list
            .items
            .iter()
            .map(|e| {
                let name = e["involvedObject"]["name"].as_str().unwrap();
                (name.to_string(), e["reason"].as_str().unwrap().to_string())
            })
            .collect();
        seen.sort();
        let want = [("a", "Scheduled"), ("b", "FailedScheduling")];
        assert_eq!(seen, want.map(|(n, r)| (n.to_string(), r.to_string())));
        // The same verdict again writes nothing.
        let mut again = vec![a, b.clone()];
        pass(&client, def, &nodes, &mut again).await.unwrap();
        assert_eq!(
            api.get("b").await.unwrap().metadata.resource_version,
            b.metadata.resource_version
        );
    }
}
