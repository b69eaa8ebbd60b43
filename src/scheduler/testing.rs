//! Builders of nodes and VMIs for the scheduler's unit tests.

use api::core::node::Node;
use api::kubevirt::virtualmachineinstance::VirtualMachineInstance;
use serde_json::{json, Value};

/// A Ready, schedulable amd64 node with `cpu` and `memory` allocatable and extra labels.
pub fn node(name: &str, cpu: &str, memory: &str, labels: Value) -> Node {
    let mut all = json!({"kubernetes.io/arch": "amd64", "kubernetes.io/hostname": name,
        "kubevirt.io/schedulable": "true"});
    for (k, v) in labels.as_object().into_iter().flatten() {
        all[k] = v.clone();
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": all},
        "status": {"allocatable": {"cpu": cpu, "memory": memory},
                   "conditions": [{"type": "Ready", "status": "True"}]},
    }))
    .expect("a valid node")
}

/// Applies a JSON merge of `patch` onto `node`.
pub fn with(node: &Node, patch: Value) -> Node {
    let mut v = serde_json::to_value(node).expect("nodes serialize");
    json_patch::merge(&mut v, &patch);
    serde_json::from_value(v).expect("a valid node")
}

/// A VMI in namespace `default` requesting 128Mi, with `spec` merged in.
pub fn vmi(name: &str, labels: Value, spec: Value) -> VirtualMachineInstance {
    let mut v = json!({
        "metadata": {"name": name, "namespace": "default", "uid": name, "labels": labels},
        "spec": {"architecture": "amd64",
                 "domain": {"resources": {"requests": {"memory": "128Mi"}}, "devices": {}}},
    });
    json_patch::merge(&mut v["spec"], &spec);
    serde_json::from_value(v).expect("a valid VMI")
}

/// `vmi` placed on `node` in phase Running.
pub fn placed(mut vmi: VirtualMachineInstance, node: &str) -> VirtualMachineInstance {
    vmi.status = Some(
        serde_json::from_value(json!({"nodeName": node, "phase": "Running"}))
            .expect("a valid status"),
    );
    vmi
}
