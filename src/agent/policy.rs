//! NodeNetworkConfigurationPolicies on this node (kubernetes-nmstate's handler): watches
//! the policies, applies each one whose `nodeSelector` matches this Node's labels through
//! [`PolicyApplier`] (with rollback on failure), reports the outcome in the
//! NodeNetworkConfigurationEnactment `<node>.<policy>`, and keeps the policy's summary
//! conditions (`Available`, `Degraded`, `Progressing`) current from all enactments.
//! At most `spec.maxUnavailable` of the selected nodes apply a policy at once ([`rollout`]);
//! the others wait with their enactment `Pending` (`MaxUnavailableLimitReached`).
//! When a policy is deleted or stops selecting the node, what it did here is reverted and
//! the enactment removed — also for a policy deleted while the agent was down (its record
//! on disk names it at start). Each enactment carries the agent's finalizer, so that the
//! garbage collector (the enactment is owned by its policy) cannot remove it before the
//! node has reverted: an enactment that is gone means the node is clean.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::rollout::{self, Claim};
use crate::client::{Api, Client, ClientError};
use crate::controller::clock;
use crate::controller::reflector::{reflect, Cache};
use crate::controller::runtime::{self, Action};
use crate::network::policy::{PolicyApplier, PolicyError};
use crate::store::{DeleteOptions, ListOptions, WriteOptions};
use api::core::node::Node;
use api::network::policy::{
    enactment_name, NmstateCondition, NodeNetworkConfigurationPolicy,
    MAX_UNAVAILABLE_LIMIT_REACHED, NODE_LABEL, POLICY_LABEL,
};
use api::resource::ResourceDef;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The agent's finalizer on each enactment: removed once the node has reverted the policy.
pub const FINALIZER: &str = "monovirt.io/node-network-revert";

/// How often every policy is re-applied without changes (drift is repaired then).
pub const RESYNC: Duration = Duration::from_secs(60);

/// How soon a node waiting for a place under `maxUnavailable` asks again (it also asks
/// whenever the policy changes, which a node giving its place back does).
const PENDING_RETRY: Duration = Duration::from_secs(3);

/// Errors of one policy reconcile (retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum PolicyReconcileError {
    #[error(transparent)]
    Api(#[from] ClientError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// The reconciler's context.
pub struct PolicyContext {
    client: Client,
    node: String,
    applier: Arc<PolicyApplier>,
    policies: Cache<NodeNetworkConfigurationPolicy>,
    policy_def: &'static ResourceDef,
    enactment_def: &'static ResourceDef,
    node_def: &'static ResourceDef,
    /// The generation of each policy last applied here, when, and whether it failed: the
    /// policy's own status (which this agent writes) changing does not apply it again —
    /// only a new generation or the periodic resync does (nmstate's generation predicate).
    applied: Mutex<HashMap<String, Applied>>,
}

#[derive(Debug, Clone, Copy)]
struct Applied {
    generation: i64,
    at: Instant,
    failed: bool,
}

impl PolicyContext {
    fn applied(&self) -> std::sync::MutexGuard<'_, HashMap<String, Applied>> {
        // A poisoned lock only means a reconcile panicked; the map stays whole.
        self.applied.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn defs() -> Option<(
    &'static ResourceDef,
    &'static ResourceDef,
    &'static ResourceDef,
)> {
    Some((
        api::resource::find_kind("nmstate.io", "NodeNetworkConfigurationPolicy")?,
        api::resource::find_kind("nmstate.io", "NodeNetworkConfigurationEnactment")?,
        api::resource::find_kind("", "Node")?,
    ))
}

/// Runs the policy reconciler until `shutdown`.
pub async fn run(
    client: Client,
    node: String,
    applier: Arc<PolicyApplier>,
    shutdown: CancellationToken,
) {
    let Some((policy_def, enactment_def, node_def)) = defs() else {
        tracing::warn!("the API serves no nmstate.io policies: node network policies are off");
        return;
    };
    let ctx = Arc::new(PolicyContext {
        client: client.clone(),
        node,
        applier,
        policies: Cache::default(),
        policy_def,
        enactment_def,
        node_def,
        applied: Mutex::default(),
    });
    let (keys_tx, keys_rx) = mpsc::unbounded_channel();
    let (changes_tx, mut changes_rx) = mpsc::unbounded_channel();
    let reflector = tokio::spawn(reflect(
        Api::all(client.clone(), policy_def),
        ctx.policies.clone(),
        changes_tx,
        shutdown.clone(),
    ));
    // Policies perhaps deleted while the agent was down: those with a record here, and
    // those named by this node's enactments (a failed apply records nothing, but its
    // enactment is held by the agent's finalizer). Reconciled once the cache holds every
    // policy: an empty cache would read as "all deleted", and a restart would revert
    // (then re-apply) every policy.
    let recorded = ctx.applier.recorded().await;
    let (cache, recorded_tx) = (ctx.policies.clone(), keys_tx.clone());
    let enactments: Api<Value> = Api::all(client.clone(), enactment_def);
    let node_selector = format!("{NODE_LABEL}={}", ctx.node);
    let recorded_keys = tokio::spawn(async move {
        cache.synced().await;
        let mut names: Vec<String> = recorded.into_keys().collect();
        let mine = ListOptions {
            label_selector: Some(node_selector),
            ..ListOptions::default()
        };
        match enactments.list(&mine).await {
            Ok(list) => names.extend(
                list.items
                    .iter()
                    .filter_map(|e| e["metadata"]["labels"][POLICY_LABEL].as_str())
                    .map(str::to_string),
            ),
            Err(e) => tracing::warn!("listing this node's enactments failed: {e}"),
        }
        names.sort();
        names.dedup();
        for name in names {
            let _ = recorded_tx.send(name);
        }
    });
    let forward = tokio::spawn(async move {
        while let Some(c) = changes_rx.recv().await {
            if keys_tx.send(c.key).is_err() {
                return;
            }
        }
    });
    runtime::run(
        ctx.clone(),
        keys_rx,
        |c: &PolicyContext| {
            c.policies
                .list()
                .iter()
                .filter_map(|p| p.metadata.name.clone())
                .collect()
        },
        reconcile,
        RESYNC,
        shutdown,
    )
    .await;
    let _ = reflector.await;
    recorded_keys.abort();
    forward.abort();
}

fn selects(policy: &NodeNetworkConfigurationPolicy, labels: &BTreeMap<String, String>) -> bool {
    policy
        .spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v))
}

fn condition(type_: &str, status: bool, reason: &str, message: &str) -> NmstateCondition {
    NmstateCondition {
        type_: type_.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        reason: Some(reason.to_string()),
        message: (!message.is_empty()).then(|| message.to_string()),
        ..NmstateCondition::default()
    }
}

/// Stamps times on `new`, keeping each condition's transition time while its status holds.
fn stamp(new: &mut [NmstateCondition], old: &[NmstateCondition]) {
    let now = Time(clock::now());
    for c in new.iter_mut() {
        let prev = old.iter().find(|o| o.type_ == c.type_);
        c.last_heartbeat_time = Some(now.clone());
        c.last_transition_time = match prev {
            Some(p) if p.status == c.status => p.last_transition_time.clone(),
            _ => Some(now.clone()),
        };
    }
}

/// Whether two condition lists say the same (times aside).
fn same(a: &[NmstateCondition], b: &[NmstateCondition]) -> bool {
    let key = |c: &NmstateCondition| {
        (
            c.type_.clone(),
            c.status.clone(),
            c.reason.clone(),
            c.message.clone(),
        )
    };
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| key(x) == key(y))
}

/// The enactment conditions kubernetes-nmstate writes for each outcome.
enum Outcome<'a> {
    /// Waiting for a place under the policy's `maxUnavailable` (that many nodes).
    Pending(usize),
    Progressing,
    Available,
    Failing(&'a str),
}

fn enactment_conditions(outcome: Outcome<'_>) -> Vec<NmstateCondition> {
    // (condition true for this outcome, reason, message)
    let (on, reason, message) = match outcome {
        Outcome::Pending(max) => (
            "Pending",
            MAX_UNAVAILABLE_LIMIT_REACHED,
            format!("maximal number of {max} nodes are already processing policy configuration"),
        ),
        Outcome::Progressing => (
            "Progressing",
            "ConfigurationProgressing",
            "Applying desired state".to_string(),
        ),
        Outcome::Available => (
            "Available",
            "SuccessfullyConfigured",
            "successfully reconciled".to_string(),
        ),
        Outcome::Failing(e) => (
            "Failing",
            "FailedToConfigure",
            format!("error reconciling NodeNetworkConfigurationPolicy on node: {e}; rolled back"),
        ),
    };
    ["Failing", "Available", "Progressing", "Pending", "Aborted"]
        .into_iter()
        .map(|t| condition(t, t == on, reason, if t == on { &message } else { "" }))
        .collect()
}

async fn reconcile(ctx: Arc<PolicyContext>, name: String) -> Result<Action, PolicyReconcileError> {
    let nodes: Api<Node> = Api::all(ctx.client.clone(), ctx.node_def);
    let policy = ctx.policies.get(&name);
    let labels = nodes
        .get(&ctx.node)
        .await?
        .metadata
        .labels
        .unwrap_or_default();
    let wanted = policy
        .as_deref()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| selects(p, &labels));
    let enactments: Api<Value> = Api::all(ctx.client.clone(), ctx.enactment_def);
    let enactment = enactment_name(&ctx.node, &name);
    let Some(policy) = wanted else {
        ctx.applied().remove(&name);
        ctx.applier.revert(&name).await?;
        release_enactment(&enactments, &enactment).await?;
        match enactments
            .delete(&enactment, &DeleteOptions::default())
            .await
        {
            Ok(_) => tracing::info!(policy = %name, "node network policy reverted"),
            Err(e) if e.code() == Some(404) => {}
            Err(e) => return Err(e.into()),
        }
        if policy.is_some() {
            update_policy_status(&ctx, &name).await?;
        }
        return Ok(Action::AwaitChange);
    };
    let generation = policy.metadata.generation.unwrap_or(1);
    // Applied at this generation within the last resync period: nothing to do until then.
    let last = ctx.applied().get(&name).copied();
    if let Some(last) = last.filter(|l| l.generation == generation) {
        let age = last.at.elapsed();
        if age < RESYNC / 2 {
            return Ok(if last.failed {
                Action::Requeue(RESYNC.saturating_sub(age))
            } else {
                Action::AwaitChange
            });
        }
    }
    let desired = serde_json::to_value(&policy.spec.desired_state).unwrap_or(Value::Null);
    let current = match enactments.get_opt(&enactment).await? {
        Some(e) => e,
        None => {
            let mut e = json!({
                "apiVersion": "nmstate.io/v1", "kind": "NodeNetworkConfigurationEnactment",
                "metadata": {"name": enactment,
                    "labels": {POLICY_LABEL: name, NODE_LABEL: ctx.node},
                    "finalizers": [FINALIZER]},
            });
            if let Some(uid) = &policy.metadata.uid {
                e["metadata"]["ownerReferences"] = json!([{
                    "apiVersion": "nmstate.io/v1", "kind": "NodeNetworkConfigurationPolicy",
                    "name": name, "uid": uid}]);
            }
            enactments.create(&e, &WriteOptions::default()).await?
        }
    };
    let old: Vec<NmstateCondition> =
        serde_json::from_value(current["status"]["conditions"].clone()).unwrap_or_default();
    let policies: Api<Value> = Api::all(ctx.client.clone(), ctx.policy_def);
    let matching = matching_nodes(&ctx, policy).await?.len();
    if let Claim::LimitReached { max } = rollout::claim(&policies, &name, matching).await? {
        write_enactment(
            &enactments,
            &current,
            &desired,
            generation,
            Outcome::Pending(max),
            &old,
        )
        .await?;
        update_policy_status(&ctx, &name).await?;
        return Ok(Action::Requeue(PENDING_RETRY));
    }
    let applied_generation = current["status"]["policyGeneration"].as_i64();
    let was_pending = old
        .iter()
        .any(|c| c.type_ == "Pending" && c.status == "True");
    if applied_generation != Some(generation) || was_pending {
        write_enactment(
            &enactments,
            &current,
            &desired,
            generation,
            Outcome::Progressing,
            &old,
        )
        .await?;
        update_policy_status(&ctx, &name).await?;
    }
    let probe_nodes = nodes.clone();
    let me = ctx.node.clone();
    let result = ctx
        .applier
        .apply(
            &name,
            generation,
            &policy.spec.desired_state,
            || async move {
                // nmstate's probe: the control plane must still be reachable from here.
                probe_nodes
                    .get(&me)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("the API server is unreachable: {e}"))
            },
        )
        .await;
    // Give the place back whatever happened: a failed apply has been rolled back.
    if let Err(e) = rollout::release(&policies, &name).await {
        tracing::warn!(policy = %name, "giving back the rollout place failed (it expires): {e}");
    }
    let current = enactments.get(&enactment).await?;
    let old: Vec<NmstateCondition> =
        serde_json::from_value(current["status"]["conditions"].clone()).unwrap_or_default();
    let message = result.as_ref().err().map(|e| {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(inner) = src {
            s = format!("{s}: {inner}");
            src = inner.source();
        }
        s
    });
    ctx.applied().insert(
        name.clone(),
        Applied {
            generation,
            at: Instant::now(),
            failed: message.is_some(),
        },
    );
    let outcome = match &message {
        None => Outcome::Available,
        Some(m) => Outcome::Failing(m),
    };
    write_enactment(&enactments, &current, &desired, generation, outcome, &old).await?;
    update_policy_status(&ctx, &name).await?;
    match message {
        None => Ok(Action::AwaitChange),
        Some(m) => {
            tracing::warn!(policy = %name, "node network policy failed: {m}");
            // A missing port may appear later (a NIC hot-plugged); try again now and then.
            Ok(Action::Requeue(RESYNC))
        }
    }
}

/// Removes the agent's finalizer from the enactment `name`, if it is there: the node has
/// reverted the policy, so the enactment may go.
async fn release_enactment(enactments: &Api<Value>, name: &str) -> Result<(), ClientError> {
    let Some(current) = enactments.get_opt(name).await? else {
        return Ok(());
    };
    let finalizers = current["metadata"]["finalizers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let mut released = current;
    released["metadata"]["finalizers"] =
        Value::Array(finalizers.into_iter().filter(|f| f != FINALIZER).collect());
    match enactments
        .replace(name, &released, &WriteOptions::default())
        .await
    {
        Ok(_) => Ok(()),
        // Releasing the last finalizer of a deleted enactment removes it.
        Err(e) if e.code() == Some(404) => Ok(()),
        Err(e) => Err(e),
    }
}

async fn write_enactment(
    enactments: &Api<Value>,
    current: &Value,
    desired: &Value,
    generation: i64,
    outcome: Outcome<'_>,
    old: &[NmstateCondition],
) -> Result<(), ClientError> {
    let mut conditions = enactment_conditions(outcome);
    if same(&conditions, old) && current["status"]["policyGeneration"].as_i64() == Some(generation)
    {
        return Ok(());
    }
    stamp(&mut conditions, old);
    let mut e = current.clone();
    e["status"] = json!({
        "desiredState": desired,
        "policyGeneration": generation,
        "conditions": conditions,
    });
    let name = current["metadata"]["name"].as_str().unwrap_or_default();
    enactments.replace_status(name, &e).await?;
    Ok(())
}

/// The names of the nodes `policy` selects.
async fn matching_nodes(
    ctx: &PolicyContext,
    policy: &NodeNetworkConfigurationPolicy,
) -> Result<Vec<String>, ClientError> {
    let nodes: Api<Node> = Api::all(ctx.client.clone(), ctx.node_def);
    Ok(nodes
        .list(&ListOptions::default())
        .await?
        .items
        .into_iter()
        .filter(|n| {
            selects(
                policy,
                n.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()),
            )
        })
        .filter_map(|n| n.metadata.name)
        .collect())
}

/// Recomputes the policy's conditions from the enactments of the nodes it selects.
async fn update_policy_status(ctx: &PolicyContext, name: &str) -> Result<(), ClientError> {
    // Read and written as JSON: the typed struct would drop what it does not model.
    let policies: Api<Value> = Api::all(ctx.client.clone(), ctx.policy_def);
    let Some(raw) = policies.get_opt(name).await? else {
        return Ok(());
    };
    let policy: NodeNetworkConfigurationPolicy = match serde_json::from_value(raw.clone()) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(policy = %name, "policy does not decode: {e}");
            return Ok(());
        }
    };
    let generation = policy.metadata.generation.unwrap_or(1);
    let matching = matching_nodes(ctx, &policy).await?;
    let enactments: Api<Value> = Api::all(ctx.client.clone(), ctx.enactment_def);
    let list = enactments
        .list(&ListOptions {
            label_selector: Some(format!("{POLICY_LABEL}={name}")),
            ..ListOptions::default()
        })
        .await?;
    let (mut available, mut failing) = (0, 0);
    for e in &list.items {
        let node = e["metadata"]["labels"][NODE_LABEL].as_str().unwrap_or("");
        if !matching.iter().any(|n| n == node)
            || e["status"]["policyGeneration"].as_i64() != Some(generation)
        {
            continue;
        }
        let conds: Vec<NmstateCondition> =
            serde_json::from_value(e["status"]["conditions"].clone()).unwrap_or_default();
        let is = |t: &str| conds.iter().any(|c| c.type_ == t && c.status == "True");
        if is("Available") {
            available += 1;
        } else if is("Failing") {
            failing += 1;
        }
    }
    let total = matching.len();
    let mut conditions = if total == 0 {
        vec![
            condition(
                "Available",
                true,
                "NoMatchingNode",
                "Policy does not match any node",
            ),
            condition("Degraded", false, "NoMatchingNode", ""),
            condition("Progressing", false, "NoMatchingNode", ""),
        ]
    } else if failing > 0 {
        let m = format!("{failing}/{total} nodes failed to configure");
        vec![
            condition("Available", false, "FailedToConfigure", ""),
            condition("Degraded", true, "FailedToConfigure", &m),
            condition("Progressing", false, "FailedToConfigure", ""),
        ]
    } else if available == total {
        let m = format!("{available}/{total} nodes successfully configured");
        vec![
            condition("Available", true, "SuccessfullyConfigured", &m),
            condition("Degraded", false, "SuccessfullyConfigured", ""),
            condition("Progressing", false, "SuccessfullyConfigured", ""),
        ]
    } else {
        let m = format!("Policy is progressing {available}/{total} nodes finished");
        vec![
            condition("Available", false, "ConfigurationProgressing", ""),
            condition("Degraded", false, "ConfigurationProgressing", ""),
            condition("Progressing", true, "ConfigurationProgressing", &m),
        ]
    };
    let old = policy
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    if same(&conditions, &old) {
        return Ok(());
    }
    stamp(&mut conditions, &old);
    let mut updated = raw;
    // Only the conditions: the rollout count beside them belongs to [`rollout`].
    if !updated["status"].is_object() {
        updated["status"] = json!({});
    }
    updated["status"]["conditions"] = serde_json::to_value(&conditions).unwrap_or_default();
    // The resourceVersion read above guards against another node's concurrent write: a
    // 409 retries this reconcile with a fresh count.
    policies.replace_status(name, &updated).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_and_conditions() {
        let p: NodeNetworkConfigurationPolicy = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"nodeSelector": {"role": "edge"}, "desiredState": {"interfaces": []}}
        }))
        .expect("policy");
        let mut labels = BTreeMap::from([("role".to_string(), "edge".to_string())]);
        assert!(selects(&p, &labels));
        labels.insert("role".into(), "core".into());
        assert!(!selects(&p, &labels));
        let failing = enactment_conditions(Outcome::Failing("boom"));
        assert!(failing
            .iter()
            .any(|c| c.type_ == "Failing" && c.status == "True"));
        let ok = enactment_conditions(Outcome::Available);
        assert!(!same(&failing, &ok));
        let mut stamped = ok.clone();
        stamp(&mut stamped, &[]);
        assert!(same(&stamped, &ok));
        assert!(stamped[0].last_transition_time.is_some());
    }
}
