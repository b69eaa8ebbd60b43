//! Filters: each says whether a node can run a VMI at all, and why not. They mirror
//! kube-scheduler's plugins (NodeUnschedulable, NodeResourcesFit, NodeAffinity,
//! InterPodAffinity, TaintToleration) plus KubeVirt's own node selectors
//! (`kubevirt.io/schedulable`, `kubernetes.io/arch`).

use super::cluster::{Cluster, NodeState};
use super::request::Request;
use super::selector::{label_selector_matches, node_term_matches, Labels};
use api::kubevirt::virtualmachineinstance::VirtualMachineInstance;
use k8s_openapi::api::core::v1::{PodAffinityTerm, Taint, Toleration};

/// The node label carrying the architecture (`amd64`, `arm64`, ...).
pub const ARCH_LABEL: &str = "kubernetes.io/arch";
/// The label virt-handler (here: the node agent) sets to say the node can run VMs.
pub const SCHEDULABLE_LABEL: &str = "kubevirt.io/schedulable";

/// A filter: `Err(reason)` when the node cannot run the VMI.
pub type Filter = fn(&VirtualMachineInstance, &Request, &NodeState, &Cluster) -> Result<(), String>;

/// Every filter, in the order reasons are reported.
pub const FILTERS: &[Filter] = &[
    ready,
    schedulable,
    architecture,
    node_selector,
    node_affinity,
    taints,
    resources,
    vmi_affinity,
    vmi_anti_affinity,
];

/// The node's Ready condition is True.
pub fn ready(
    _: &VirtualMachineInstance,
    _: &Request,
    n: &NodeState,
    _: &Cluster,
) -> Result<(), String> {
    let ready = n
        .node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    if ready {
        Ok(())
    } else {
        Err("node is not Ready".into())
    }
}

/// The node is not cordoned (`spec.unschedulable`) and not labelled unschedulable for VMs.
pub fn schedulable(
    _: &VirtualMachineInstance,
    _: &Request,
    n: &NodeState,
    _: &Cluster,
) -> Result<(), String> {
    if n.node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        return Err("node is unschedulable (cordoned)".into());
    }
    if n.labels
        .get(SCHEDULABLE_LABEL)
        .is_some_and(|v| v == "false")
    {
        return Err(format!("node has label {SCHEDULABLE_LABEL}=false"));
    }
    Ok(())
}

/// The node's architecture is the VMI's (`spec.architecture`, when set).
pub fn architecture(
    vmi: &VirtualMachineInstance,
    _: &Request,
    n: &NodeState,
    _: &Cluster,
) -> Result<(), String> {
    let Some(want) = vmi.spec.architecture.as_deref().filter(|a| !a.is_empty()) else {
        return Ok(());
    };
    match n.labels.get(ARCH_LABEL) {
        Some(have) if have == want => Ok(()),
        Some(have) => Err(format!("node architecture {have} is not {want}")),
        None => Err(format!("node has no {ARCH_LABEL} label (want {want})")),
    }
}

/// The node has every label of `spec.nodeSelector`.
pub fn node_selector(
    vmi: &VirtualMachineInstance,
    _: &Request,
    n: &NodeState,
    _: &Cluster,
) -> Result<(), String> {
    match vmi
        .spec
        .node_selector
        .iter()
        .find(|(k, v)| n.labels.get(*k) != Some(*v))
    {
        None => Ok(()),
        Some((k, v)) => Err(format!("node does not match nodeSelector {k}={v}")),
    }
}

/// The node matches one of the required node affinity terms.
pub fn node_affinity(
    vmi: &VirtualMachineInstance,
    _: &Request,
    n: &NodeState,
    _: &Cluster,
) -> Result<(), String> {
    let Some(required) = vmi
        .spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
    else {
        return Ok(());
    };
    if required
        .node_selector_terms
        .iter()
        .any(|t| node_term_matches(t, n.name, &n.labels))
    {
        Ok(())
    } else {
        Err("node does not match required node affinity".into())
    }
}

/// Whether `t` tolerates `taint` (operator `Exists` or `Equal`; empty key with `Exists`
/// tolerates every taint; empty effect matches every effect).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    let effect_ok = t
        .effect
        .as_deref()
        .is_none_or(|e| e.is_empty() || e == taint.effect);
    let key = t.key.as_deref().unwrap_or("");
    let key_ok = key == taint.key || (key.is_empty() && t.operator.as_deref() == Some("Exists"));
    let value_ok = match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    };
    effect_ok && key_ok && value_ok
}

/// Every NoSchedule and NoExecute taint of the node is tolerated.
pub fn taints(
    vmi: &VirtualMachineInstance,
    _: &Request,
    n: &NodeState,
    _: &Cluster,
) -> Result<(), String> {
    let untolerated = n
        .node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|taint| !vmi.spec.tolerations.iter().any(|t| tolerates(t, taint)));
    match untolerated {
        None => Ok(()),
        Some(t) => Err(format!(
            "node had untolerated taint {{{}: {}}}",
            t.key,
            t.value.as_deref().unwrap_or("")
        )),
    }
}

/// The VMI's cpu and memory (with the VMM overhead) fit in what the node has left.
pub fn resources(
    _: &VirtualMachineInstance,
    req: &Request,
    n: &NodeState,
    _: &Cluster,
) -> Result<(), String> {
    let mut short = Vec::new();
    if n.used.milli_cpu.saturating_add(req.milli_cpu) > n.allocatable.milli_cpu {
        short.push("Insufficient cpu");
    }
    if n.used.memory.saturating_add(req.memory) > n.allocatable.memory {
        short.push("Insufficient memory");
    }
    if short.is_empty() {
        Ok(())
    } else {
        Err(short.join(", "))
    }
}

/// The namespaces a VMI affinity term applies to: its own list, else the VMI's namespace.
fn term_namespaces<'t>(term: &'t PodAffinityTerm, own: &'t str) -> Vec<&'t str> {
    match term.namespaces.as_deref() {
        Some(list) if !list.is_empty() => list.iter().map(String::as_str).collect(),
        _ => vec![own],
    }
}

/// Whether a VMI in `namespace` with `labels` is selected by `term` of a VMI in `own_ns`.
pub fn term_selects(
    term: &PodAffinityTerm,
    own_ns: &str,
    namespace: &str,
    labels: &Labels,
) -> bool {
    term_namespaces(term, own_ns).contains(&namespace)
        && term
            .label_selector
            .as_ref()
            .is_some_and(|s| label_selector_matches(s, labels))
}

/// The VMI's required VMI affinity and anti-affinity terms, in that order.
fn required_terms(vmi: &VirtualMachineInstance) -> (&[PodAffinityTerm], &[PodAffinityTerm]) {
    let Some(a) = vmi.spec.affinity.as_ref() else {
        return (&[], &[]);
    };
    let affinity = a.pod_affinity.as_ref().and_then(|p| {
        p.required_during_scheduling_ignored_during_execution
            .as_deref()
    });
    let anti_affinity = a.pod_anti_affinity.as_ref().and_then(|p| {
        p.required_during_scheduling_ignored_during_execution
            .as_deref()
    });
    (affinity.unwrap_or(&[]), anti_affinity.unwrap_or(&[]))
}

/// Whether the placed VMIs selected by `term` include one in the same `topologyKey` domain
/// as node `n`.
pub(super) fn term_satisfied_on(
    term: &PodAffinityTerm,
    own_ns: &str,
    n: &NodeState,
    c: &Cluster,
) -> bool {
    let Some(domain) = n.labels.get(&term.topology_key) else {
        return false;
    };
    c.placed.iter().any(|p| {
        term_selects(term, own_ns, p.namespace, &p.labels)
            && c.nodes[p.node].labels.get(&term.topology_key) == Some(domain)
    })
}

/// Every required VMI affinity term has a matching VMI in the node's topology domain. As in
/// kube-scheduler, a term no VMI matches anywhere is satisfied when the VMI matches it itself
/// (the first of a group).
pub fn vmi_affinity(
    vmi: &VirtualMachineInstance,
    _: &Request,
    n: &NodeState,
    c: &Cluster,
) -> Result<(), String> {
    let own_ns = vmi.metadata.namespace.as_deref().unwrap_or("");
    let own_labels = vmi.metadata.labels.clone().unwrap_or_default();
    let (terms, _) = required_terms(vmi);
    for term in terms {
        if term_satisfied_on(term, own_ns, n, c) {
            continue;
        }
        let none_anywhere = !c
            .placed
            .iter()
            .any(|p| term_selects(term, own_ns, p.namespace, &p.labels));
        if none_anywhere
            && term_selects(term, own_ns, own_ns, &own_labels)
            && n.labels.contains_key(&term.topology_key)
        {
            continue;
        }
        return Err(format!(
            "node didn't match VMI affinity rules (topologyKey {})",
            term.topology_key
        ));
    }
    Ok(())
}

/// No VMI selected by a required anti-affinity term of the VMI is in the node's topology
/// domain, and no placed VMI's required anti-affinity term selects this VMI in that domain.
pub fn vmi_anti_affinity(
    vmi: &VirtualMachineInstance,
    _: &Request,
    n: &NodeState,
    c: &Cluster,
) -> Result<(), String> {
    let own_ns = vmi.metadata.namespace.as_deref().unwrap_or("");
    let own_labels = vmi.metadata.labels.clone().unwrap_or_default();
    let (_, terms) = required_terms(vmi);
    for term in terms {
        if term_satisfied_on(term, own_ns, n, c) {
            return Err(format!(
                "node didn't match VMI anti-affinity rules (topologyKey {})",
                term.topology_key
            ));
        }
    }
    for p in &c.placed {
        let (_, theirs) = required_terms(p.vmi);
        for term in theirs {
            let same_domain = n
                .labels
                .get(&term.topology_key)
                .is_some_and(|d| c.nodes[p.node].labels.get(&term.topology_key) == Some(d));
            if same_domain && term_selects(term, p.namespace, own_ns, &own_labels) {
                return Err(format!(
                    "node didn't satisfy existing VMIs' anti-affinity rules (topologyKey {})",
                    term.topology_key
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::vmi;
    use super::*;
    use serde_json::json;

    #[test]
    fn required_terms_are_affinity_then_anti_affinity() {
        let none = vmi("v", json!({}), json!({}));
        assert_eq!(required_terms(&none), (&[][..], &[][..]));
        let term = |key: &str| json!({"topologyKey": key, "labelSelector": {}});
        let both = vmi(
            "v",
            json!({}),
            json!({"affinity": {
                "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("zone")]},
                "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                    [term("host"), term("rack")]},
            }}),
        );
        let (affinity, anti_affinity) = required_terms(&both);
        let keys = |terms: &[PodAffinityTerm]| {
            terms
                .iter()
                .map(|t| t.topology_key.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(affinity), ["zone"]);
        assert_eq!(keys(anti_affinity), ["host", "rack"]);
        // Preferred terms only: nothing required.
        let preferred = vmi(
            "v",
            json!({}),
            json!({"affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution":
                [{"weight": 1, "podAffinityTerm": term("zone")}]}}}),
        );
        assert_eq!(required_terms(&preferred), (&[][..], &[][..]));
    }
}
