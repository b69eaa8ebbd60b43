//! The scheduler: picks the node for a VirtualMachineInstance. [`schedule`] is a pure
//! function of (VMI, nodes, VMIs): it runs every [`filter`] on every node, scores the nodes
//! that pass ([`score`]) and returns the best, or [`Unschedulable`] with each node's reason.
//! [`runner`] is the loop that watches unscheduled VMIs and binds them.
//!
//! - [`request`]: what a VMI takes from a node (requests plus VMM overhead);
//! - [`cluster`]: nodes with their free resources, and the VMIs placed on them;
//! - [`selector`]: node selector terms and label selectors;
//! - [`filter`], [`score`]: kube-scheduler's plugins, for VMIs.
#![forbid(unsafe_code)]
// Tests unwrap freely: a failure there is the test failing.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod cluster;
pub mod filter;
pub mod request;
pub mod runner;
pub mod score;
pub mod selector;
#[cfg(test)]
mod testing;

use api::core::node::Node;
use api::kubevirt::virtualmachineinstance::VirtualMachineInstance;
use cluster::Cluster;
use std::collections::BTreeMap;
use std::fmt;

/// Why no node can run a VMI: each node's first failing filter, by node name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Unschedulable {
    /// The reason per node.
    pub reasons: BTreeMap<String, String>,
}

impl fmt::Display for Unschedulable {
    /// kube-scheduler's message: `0/3 nodes are available: 2 Insufficient memory, 1 node is
    /// not Ready.` (reasons counted, most frequent first).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for r in self.reasons.values() {
            *counts.entry(r.as_str()).or_default() += 1;
        }
        let mut counts: Vec<_> = counts.into_iter().collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        write!(f, "0/{} nodes are available", self.reasons.len())?;
        for (i, (reason, n)) in counts.iter().enumerate() {
            write!(f, "{} {n} {reason}", if i == 0 { ":" } else { "," })?;
        }
        write!(f, ".")
    }
}

/// Weights of the scores, as kube-scheduler's default profile weighs its plugins (node
/// affinity 2, inter-pod affinity 2, resources 1, spread 2).
const WEIGHTS: [i64; 4] = [2, 2, 1, 2];

/// The node to run `vmi` on, given every node and every VMI (placed or not; `vmi` itself
/// and finished VMIs are skipped).
pub fn schedule(
    vmi: &VirtualMachineInstance,
    nodes: &[Node],
    vmis: &[VirtualMachineInstance],
) -> Result<String, Unschedulable> {
    let cluster = Cluster::new(vmi, nodes, vmis);
    let req = request::of(vmi);
    let mut reasons = BTreeMap::new();
    let mut feasible = Vec::new();
    for n in &cluster.nodes {
        match filter::FILTERS
            .iter()
            .try_for_each(|f| f(vmi, &req, n, &cluster))
        {
            Ok(()) => feasible.push(n),
            Err(reason) => {
                reasons.insert(n.name.to_string(), reason);
            }
        }
    }
    if feasible.is_empty() {
        return Err(Unschedulable { reasons });
    }
    let scores = [
        score::preferred_node_affinity(vmi, &feasible),
        score::preferred_vmi_affinity(vmi, &feasible, &cluster),
        score::least_allocated(&req, &feasible),
        score::spread(&feasible),
    ];
    let total = |i: usize| -> i64 { scores.iter().zip(WEIGHTS).map(|(s, w)| s[i] * w).sum() };
    // Highest total wins; ties go to the first name, so the result is deterministic.
    let best = (0..feasible.len())
        .max_by(|&a, &b| {
            total(a)
                .cmp(&total(b))
                .then(feasible[b].name.cmp(feasible[a].name))
        })
        .expect("feasible is not empty");
    Ok(feasible[best].name.to_string())
}

#[cfg(test)]
mod tests {
    use super::testing::{node, placed, vmi, with};
    use super::*;
    use serde_json::json;

    fn reason(err: &Unschedulable, node: &str) -> String {
        err.reasons[node].clone()
    }

    #[test]
    fn not_ready_and_cordoned_nodes_are_filtered() {
        let a = with(
            &node("a", "4", "4Gi", json!({})),
            json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
        );
        let b = with(
            &node("b", "4", "4Gi", json!({})),
            json!({"spec": {"unschedulable": true}}),
        );
        let c = node("c", "4", "4Gi", json!({"kubevirt.io/schedulable": "false"}));
        let err = schedule(&vmi("v", json!({}), json!({})), &[a, b, c], &[]).unwrap_err();
        assert_eq!(reason(&err, "a"), "node is not Ready");
        assert_eq!(reason(&err, "b"), "node is unschedulable (cordoned)");
        assert!(reason(&err, "c").contains("kubevirt.io/schedulable=false"));
        assert_eq!(
            err.to_string(),
            "0/3 nodes are available: 1 node has label kubevirt.io/schedulable=false, \
             1 node is not Ready, 1 node is unschedulable (cordoned)."
        );
    }

    #[test]
    fn resources_count_running_vmis_and_overhead() {
        let nodes = [node("a", "1", "250Mi", json!({}))];
        let v = vmi("v", json!({}), json!({}));
        assert_eq!(schedule(&v, &nodes, &[]).unwrap(), "a");
        let other = placed(vmi("w", json!({}), json!({})), "a");
        let err = schedule(&v, &nodes, std::slice::from_ref(&other)).unwrap_err();
        assert_eq!(reason(&err, "a"), "Insufficient memory");
        // A finished VMI frees its resources.
        let mut done = other;
        done.status.as_mut().unwrap().phase =
            Some(api::kubevirt::virtualmachineinstance::VirtualMachineInstancePhase::Succeeded);
        assert_eq!(schedule(&v, &nodes, &[done]).unwrap(), "a");
        // 128Mi of guest memory fits in 130Mi only without the VMM overhead.
        let small = [node("a", "1", "130Mi", json!({}))];
        assert!(schedule(&v, &small, &[]).is_err());
        let cpu = vmi(
            "c",
            json!({}),
            json!({"domain": {"resources": {"requests": {"cpu": "2"}}}}),
        );
        assert_eq!(
            reason(&schedule(&cpu, &nodes, &[]).unwrap_err(), "a"),
            "Insufficient cpu"
        );
    }

    #[test]
    fn node_selector_and_architecture() {
        let nodes = [
            node("a", "4", "4Gi", json!({"disk": "hdd"})),
            node(
                "b",
                "4",
                "4Gi",
                json!({"disk": "ssd", "kubernetes.io/arch": "arm64"}),
            ),
            node("c", "4", "4Gi", json!({"disk": "ssd"})),
        ];
        let v = vmi("v", json!({}), json!({"nodeSelector": {"disk": "ssd"}}));
        assert_eq!(schedule(&v, &nodes, &[]).unwrap(), "c");
        let arm = vmi("v", json!({}), json!({"architecture": "arm64"}));
        assert_eq!(schedule(&arm, &nodes, &[]).unwrap(), "b");
        let s390 = vmi("v", json!({}), json!({"architecture": "s390x"}));
        let err = schedule(&s390, &nodes, &[]).unwrap_err();
        assert_eq!(reason(&err, "a"), "node architecture amd64 is not s390x");
    }

    #[test]
    fn required_node_affinity() {
        let nodes = [
            node("a", "4", "4Gi", json!({"gen": "3"})),
            node("b", "4", "4Gi", json!({"gen": "5"})),
        ];
        let v = vmi(
            "v",
            json!({}),
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                {"nodeSelectorTerms": [{"matchExpressions": [{"key": "gen", "operator": "Gt", "values": ["4"]}]}]}}}}),
        );
        assert_eq!(schedule(&v, &nodes, &[]).unwrap(), "b");
        let none = vmi(
            "v",
            json!({}),
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                {"nodeSelectorTerms": [{"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}]}}}}),
        );
        let err = schedule(&none, &nodes, &[]).unwrap_err();
        assert_eq!(
            reason(&err, "a"),
            "node does not match required node affinity"
        );
    }

    #[test]
    fn taints_need_tolerations() {
        let tainted = with(
            &node("a", "4", "4Gi", json!({})),
            json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"},
                                       {"key": "soft", "effect": "PreferNoSchedule"}]}}),
        );
        let nodes = [tainted];
        let v = vmi("v", json!({}), json!({}));
        let err = schedule(&v, &nodes, &[]).unwrap_err();
        assert_eq!(
            reason(&err, "a"),
            "node had untolerated taint {dedicated: db}"
        );
        let wrong = vmi(
            "v",
            json!({}),
            json!({"tolerations": [{"key": "dedicated", "value": "web", "effect": "NoSchedule"}]}),
        );
        assert!(schedule(&wrong, &nodes, &[]).is_err());
        let ok = vmi(
            "v",
            json!({}),
            json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db"}]}),
        );
        assert_eq!(schedule(&ok, &nodes, &[]).unwrap(), "a");
        let all = vmi(
            "v",
            json!({}),
            json!({"tolerations": [{"operator": "Exists"}]}),
        );
        assert_eq!(schedule(&all, &nodes, &[]).unwrap(), "a");
        let no_exec = with(
            &node("b", "4", "4Gi", json!({})),
            json!({"spec": {"taints": [{"key": "gone", "effect": "NoExecute"}]}}),
        );
        let ok = vmi(
            "v",
            json!({}),
            json!({"tolerations": [{"key": "gone", "operator": "Exists", "effect": "NoSchedule"}]}),
        );
        assert!(schedule(&ok, &[no_exec], &[]).is_err());
    }

    fn zones() -> Vec<Node> {
        vec![
            node("a1", "4", "4Gi", json!({"zone": "a"})),
            node("a2", "4", "4Gi", json!({"zone": "a"})),
            node("b1", "4", "4Gi", json!({"zone": "b"})),
        ]
    }

    #[test]
    fn vmi_affinity_follows_the_topology_domain() {
        let nodes = zones();
        let db = placed(vmi("db", json!({"app": "db"}), json!({})), "b1");
        let web = vmi(
            "web",
            json!({"app": "web"}),
            json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                [{"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}]}}}),
        );
        assert_eq!(schedule(&web, &nodes, &[db]).unwrap(), "b1");
        // No db anywhere: unschedulable, unless the VMI matches its own term.
        let err = schedule(&web, &nodes, &[]).unwrap_err();
        assert!(reason(&err, "a1").contains("VMI affinity"));
        let first = vmi(
            "db0",
            json!({"app": "db"}),
            json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                [{"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}]}}}),
        );
        assert!(schedule(&first, &nodes, &[]).is_ok());
    }

    #[test]
    fn vmi_anti_affinity_both_ways() {
        let nodes = zones();
        let terms = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            [{"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}]}}});
        let db0 = placed(vmi("db0", json!({"app": "db"}), terms.clone()), "a1");
        let db1 = vmi("db1", json!({"app": "db"}), terms);
        assert_eq!(
            schedule(&db1, &nodes, std::slice::from_ref(&db0)).unwrap(),
            "b1"
        );
        // The placed VMI's own anti-affinity repels a VMI without any terms.
        let plain = vmi("db2", json!({"app": "db"}), json!({}));
        let err = schedule(&plain, &nodes[..2], &[db0]).unwrap_err();
        assert!(reason(&err, "a2").contains("existing VMIs' anti-affinity"));
    }

    #[test]
    fn preferred_node_affinity_scores() {
        let nodes = [
            node("a", "4", "4Gi", json!({"fast": "yes"})),
            node("b", "4", "4Gi", json!({})),
        ];
        let v = vmi(
            "v",
            json!({}),
            json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution":
                [{"weight": 50, "preference": {"matchExpressions": [{"key": "fast", "operator": "In", "values": ["yes"]}]}}]}}}),
        );
        assert_eq!(schedule(&v, &nodes, &[]).unwrap(), "a");
        // Without the preference, b wins: it runs nothing.
        let plain = vmi("v", json!({}), json!({}));
        let busy = placed(vmi("w", json!({}), json!({})), "a");
        assert_eq!(schedule(&plain, &nodes, &[busy]).unwrap(), "b");
    }

    #[test]
    fn preferred_vmi_affinity_scores() {
        let nodes = zones();
        let db = placed(vmi("db", json!({"app": "db"}), json!({})), "a1");
        let near = vmi(
            "near",
            json!({}),
            json!({"affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution":
                [{"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}}]}}}),
        );
        // a2 shares a1's zone and, unlike a1, runs nothing.
        assert_eq!(
            schedule(&near, &nodes, std::slice::from_ref(&db)).unwrap(),
            "a2"
        );
        let far = vmi(
            "far",
            json!({}),
            json!({"affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution":
                [{"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}}]}}}),
        );
        assert_eq!(schedule(&far, &nodes, &[db]).unwrap(), "b1");
    }

    #[test]
    fn least_allocated_and_spread_scores() {
        let nodes = [
            node("big", "16", "64Gi", json!({})),
            node("small", "2", "1Gi", json!({})),
        ];
        let v = vmi("v", json!({}), json!({}));
        assert_eq!(schedule(&v, &nodes, &[]).unwrap(), "big");
        let req = request::of(&v);
        let cluster = Cluster::new(&v, &nodes, &[]);
        let refs: Vec<_> = cluster.nodes.iter().collect();
        let scores = score::least_allocated(&req, &refs);
        assert!(scores[0] > scores[1]);
        // Equal nodes: spread puts the VMI where fewer VMIs run.
        let same = [
            node("x", "4", "4Gi", json!({})),
            node("y", "4", "4Gi", json!({})),
        ];
        let on_x = placed(
            vmi(
                "w",
                json!({}),
                json!({"domain": {"resources": {"requests": {"memory": "1Mi"}}}}),
            ),
            "x",
        );
        let cluster = Cluster::new(&v, &same, std::slice::from_ref(&on_x));
        let refs: Vec<_> = cluster.nodes.iter().collect();
        assert_eq!(score::spread(&refs), vec![0, 100]);
        assert_eq!(schedule(&v, &same, &[on_x]).unwrap(), "y");
    }

    #[test]
    fn no_nodes_is_unschedulable() {
        let err = schedule(&vmi("v", json!({}), json!({})), &[], &[]).unwrap_err();
        assert_eq!(err.to_string(), "0/0 nodes are available.");
    }
}
