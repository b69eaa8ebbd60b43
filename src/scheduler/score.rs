//! Scores: among the nodes that pass every filter, which is best. Each score gives 0..=100
//! per node (kube-scheduler's `MaxNodeScore`); the scheduler adds them up with weights.

use super::cluster::{Cluster, NodeState};
use super::filter::term_satisfied_on;
use super::request::Request;
use super::selector::node_term_matches;
use api::kubevirt::virtualmachineinstance::VirtualMachineInstance;

/// The highest score a node gets from one scorer.
pub const MAX_SCORE: i64 = 100;

/// Scales raw per-node values onto 0..=MAX_SCORE, the highest raw value getting MAX_SCORE
/// and the lowest (when negative) 0 (kube-scheduler's DefaultNormalizeScore, extended to
/// negative raw values as InterPodAffinity does).
fn normalize(raw: &[i64]) -> Vec<i64> {
    let max = raw.iter().copied().max().unwrap_or(0);
    let min = raw.iter().copied().min().unwrap_or(0).min(0);
    let span = max - min;
    raw.iter()
        .map(|&v| {
            if span == 0 {
                0
            } else {
                (v - min) * MAX_SCORE / span
            }
        })
        .collect()
}

/// Preferred node affinity: the sum of the weights of the preferred terms each node matches.
pub fn preferred_node_affinity(vmi: &VirtualMachineInstance, nodes: &[&NodeState]) -> Vec<i64> {
    let terms = vmi
        .spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or(&[]);
    let raw: Vec<i64> = nodes
        .iter()
        .map(|n| {
            terms
                .iter()
                .filter(|t| node_term_matches(&t.preference, n.name, &n.labels))
                .map(|t| i64::from(t.weight))
                .sum()
        })
        .collect();
    normalize(&raw)
}

/// Preferred VMI affinity and anti-affinity: for each node, the weights of preferred
/// affinity terms with a matching VMI in its topology domain, minus those of preferred
/// anti-affinity terms.
pub fn preferred_vmi_affinity(
    vmi: &VirtualMachineInstance,
    nodes: &[&NodeState],
    c: &Cluster,
) -> Vec<i64> {
    let own_ns = vmi.metadata.namespace.as_deref().unwrap_or("");
    let affinity = vmi.spec.affinity.as_ref();
    let attract = affinity
        .and_then(|a| a.pod_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or(&[]);
    let repel = affinity
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or(&[]);
    let raw: Vec<i64> = nodes
        .iter()
        .map(|n| {
            let weight_of = |terms: &[k8s_openapi::api::core::v1::WeightedPodAffinityTerm]| {
                terms
                    .iter()
                    .filter(|w| term_satisfied_on(&w.pod_affinity_term, own_ns, n, c))
                    .map(|w| i64::from(w.weight))
                    .sum::<i64>()
            };
            weight_of(attract) - weight_of(repel)
        })
        .collect();
    normalize(&raw)
}

/// Least allocated: the mean share of cpu and memory left free after placing the VMI.
pub fn least_allocated(req: &Request, nodes: &[&NodeState]) -> Vec<i64> {
    let free = |alloc: i64, used: i64, want: i64| {
        if alloc <= 0 {
            0
        } else {
            (alloc - used - want).max(0) * MAX_SCORE / alloc
        }
    };
    nodes
        .iter()
        .map(|n| {
            (free(n.allocatable.milli_cpu, n.used.milli_cpu, req.milli_cpu)
                + free(n.allocatable.memory, n.used.memory, req.memory))
                / 2
        })
        .collect()
}

/// Spread: nodes running fewer VMIs score higher, so VMIs spread over the nodes.
pub fn spread(nodes: &[&NodeState]) -> Vec<i64> {
    let max = nodes.iter().map(|n| n.vmi_count).max().unwrap_or(0);
    nodes
        .iter()
        .map(|n| {
            ((max - n.vmi_count) * 100)
                .checked_div(max)
                .map_or(MAX_SCORE, |s| i64::try_from(s).unwrap_or(0))
        })
        .collect()
}
