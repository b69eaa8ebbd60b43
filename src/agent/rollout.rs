//! The rollout limit of node network policies (kubernetes-nmstate's `maxUnavailable`): at
//! most that many of the nodes a policy selects apply it at the same time, so a policy that
//! cuts nodes off their network cannot take the whole cluster down at once.
//!
//! The count of nodes applying lives in the policy's own status
//! (`status.unavailableNodeCount`), as in kubernetes-nmstate: a node claims a place by
//! writing count + 1 under the resourceVersion it read — two nodes racing for the last place
//! conflict, and the loser reads again — and gives it back when it has applied (or failed
//! and rolled back). A count left by a node that died mid-apply expires after
//! [`STALE_CLAIM`] without an update.

use std::time::Duration;

use crate::client::{Api, ClientError};
use crate::controller::clock;
use api::network::policy::max_unavailable_nodes;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// After this long without a change, the count of nodes applying is taken as zero: an
/// apply (netlink changes and the API probe, with its rollback) takes seconds, so a count
/// this old was left by a node that stopped while applying.
pub const STALE_CLAIM: Duration = Duration::from_secs(120);

/// How many optimistic-concurrency conflicts a claim or release retries before giving up
/// (the reconcile is retried then, with backoff).
const ATTEMPTS: usize = 16;

/// The answer to a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This node may apply the policy now; it must [`release`] afterwards.
    Granted,
    /// `max` nodes are applying it already: wait for one to finish.
    LimitReached {
        /// The limit in nodes.
        max: usize,
    },
}

/// Claims one of the policy `name`'s places for applying it, out of the limit its
/// `spec.maxUnavailable` gives for `matching` selected nodes.
pub async fn claim(
    policies: &Api<Value>,
    name: &str,
    matching: usize,
) -> Result<Claim, ClientError> {
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let Some(raw) = policies.get_opt(name).await? else {
            // Deleted meanwhile: there is nothing left to pace.
            return Ok(Claim::Granted);
        };
        // A spec the API server accepted always parses; a stored object from before that
        // check falls back to the default limit.
        let max = max_unavailable_nodes(raw.pointer("/spec/maxUnavailable"), matching)
            .or_else(|_| max_unavailable_nodes(None, matching))
            .unwrap_or(1);
        let now = clock::now();
        let count = applying(&raw, now);
        if count >= max {
            return Ok(Claim::LimitReached { max });
        }
        match write_count(policies, name, raw, count + 1, now).await {
            Ok(()) => return Ok(Claim::Granted),
            Err(e) if e.code() == Some(409) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| conflict(name)))
}

/// Gives back a place [`claim`] granted for the policy `name`.
pub async fn release(policies: &Api<Value>, name: &str) -> Result<(), ClientError> {
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let Some(raw) = policies.get_opt(name).await? else {
            return Ok(());
        };
        let now = clock::now();
        let count = applying(&raw, now);
        match write_count(policies, name, raw, count.saturating_sub(1), now).await {
            Ok(()) => return Ok(()),
            Err(e) if e.code() == Some(409) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| conflict(name)))
}

/// The number of nodes applying the policy `raw` at `now` (zero once [`STALE_CLAIM`] old).
fn applying(raw: &Value, now: DateTime<Utc>) -> usize {
    let status = &raw["status"];
    let count = status["unavailableNodeCount"].as_u64().unwrap_or(0);
    let updated = status["lastUnavailableNodeCountUpdate"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok());
    let stale = match updated {
        Some(t) => (now - t.with_timezone(&Utc))
            .to_std()
            .is_ok_and(|age| age > STALE_CLAIM),
        None => true,
    };
    if stale {
        0
    } else {
        usize::try_from(count).unwrap_or(usize::MAX)
    }
}

/// Writes `count` into the policy's status under the resourceVersion `raw` was read at.
async fn write_count(
    policies: &Api<Value>,
    name: &str,
    mut raw: Value,
    count: usize,
    now: DateTime<Utc>,
) -> Result<(), ClientError> {
    if !raw["status"].is_object() {
        raw["status"] = json!({});
    }
    raw["status"]["unavailableNodeCount"] = json!(count);
    raw["status"]["lastUnavailableNodeCountUpdate"] =
        serde_json::to_value(Time(now)).map_err(ClientError::Decode)?;
    policies.replace_status(name, &raw).await.map(|_| ())
}

fn conflict(name: &str) -> ClientError {
    ClientError::Api(api::status::ApiError::conflict(
        "nmstate.io",
        "nodenetworkconfigurationpolicies",
        name,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Client;
    use crate::store::{Objects, WriteOptions};

    fn policies() -> Api<Value> {
        let client = Client::local(Objects::in_memory().expect("store"));
        let def = api::resource::find_kind("nmstate.io", "NodeNetworkConfigurationPolicy")
            .expect("served");
        Api::all(client, def)
    }

    async fn create(policies: &Api<Value>, name: &str, max: Value) {
        let p = json!({"apiVersion": "nmstate.io/v1", "kind": "NodeNetworkConfigurationPolicy",
            "metadata": {"name": name},
            "spec": {"maxUnavailable": max, "desiredState": {"interfaces": []}}});
        policies
            .create(&p, &WriteOptions::default())
            .await
            .expect("create");
    }

    async fn count(policies: &Api<Value>, name: &str) -> u64 {
        let p = policies.get(name).await.expect("get");
        p["status"]["unavailableNodeCount"].as_u64().expect("count")
    }

    #[tokio::test]
    async fn a_node_waits_while_the_limit_is_taken_and_goes_once_a_place_is_given_back() {
        let api = policies();
        create(&api, "p", json!(1)).await;
        assert_eq!(claim(&api, "p", 3).await.expect("a"), Claim::Granted);
        assert_eq!(count(&api, "p").await, 1);
        assert_eq!(
            claim(&api, "p", 3).await.expect("b"),
            Claim::LimitReached { max: 1 }
        );
        release(&api, "p").await.expect("release a");
        assert_eq!(count(&api, "p").await, 0);
        assert_eq!(claim(&api, "p", 3).await.expect("b again"), Claim::Granted);
        release(&api, "p").await.expect("release b");
        release(&api, "p")
            .await
            .expect("an extra release stays at zero");
        assert_eq!(count(&api, "p").await, 0);
    }

    #[tokio::test]
    async fn racing_nodes_get_exactly_the_places_there_are() {
        let api = policies();
        create(&api, "p", json!("50%")).await;
        let claims = (0..6).map(|_| claim(&api, "p", 6));
        let results = futures_util::future::join_all(claims).await;
        let granted = results
            .iter()
            .filter(|r| matches!(r, Ok(Claim::Granted)))
            .count();
        let waiting = results
            .iter()
            .filter(|r| matches!(r, Ok(Claim::LimitReached { max: 3 })))
            .count();
        assert_eq!((granted, waiting), (3, 3), "{results:?}");
        assert_eq!(count(&api, "p").await, 3);
    }

    #[tokio::test]
    async fn a_count_left_by_a_dead_node_expires() {
        let api = policies();
        create(&api, "p", json!(1)).await;
        let mut raw = api.get("p").await.expect("get");
        let long_ago = clock::now() - k8s_openapi::chrono::Duration::minutes(10);
        raw["status"] = json!({"unavailableNodeCount": 1,
            "lastUnavailableNodeCountUpdate": serde_json::to_value(Time(long_ago)).expect("time")});
        api.replace_status("p", &raw).await.expect("status");
        assert_eq!(claim(&api, "p", 2).await.expect("claim"), Claim::Granted);
        assert_eq!(count(&api, "p").await, 1);
        // A fresh count is honoured.
        assert_eq!(
            claim(&api, "p", 2).await.expect("claim"),
            Claim::LimitReached { max: 1 }
        );
    }

    #[tokio::test]
    async fn a_deleted_policy_is_not_paced() {
        let api = policies();
        assert_eq!(claim(&api, "gone", 2).await.expect("claim"), Claim::Granted);
        release(&api, "gone").await.expect("release");
    }
}
