//! Resource definitions and helpers for the store's unit tests: a custom resource with a
//! status subresource (`VirtualMachine`-like), a built-in namespaced kind, and Namespace.

use super::{Objects, StoreConfig, WriteOptions};
use api::resource::ResourceDef;
use api::status::Cause;
use serde_json::{json, Value};
use std::time::Duration;

fn vm_default(v: &mut Value) {
    if let Some(spec) = v.get_mut("spec").and_then(Value::as_object_mut) {
        spec.entry("runStrategy").or_insert(json!("Halted"));
    }
}

fn vm_validate(v: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    match v.get("spec") {
        None => causes.push(Cause::required("spec")),
        Some(spec) => {
            if let Some(c) = spec.get("cpus") {
                if c.as_u64().is_none_or(|c| c == 0) {
                    causes.push(Cause::invalid("spec.cpus", "must be a positive integer"));
                }
            }
        }
    }
    causes
}

fn vm_unknown(v: &Value) -> Vec<String> {
    let known = ["runStrategy", "cpus", "template", "running"];
    v.get("spec")
        .and_then(Value::as_object)
        .map(|s| {
            s.keys()
                .filter(|k| !known.contains(&k.as_str()))
                .map(|k| format!("spec.{k}"))
                .collect()
        })
        .unwrap_or_default()
}

pub const VM: ResourceDef = ResourceDef {
    group: "kubevirt.io",
    version: "v1",
    kind: "VirtualMachine",
    list_kind: "VirtualMachineList",
    plural: "virtualmachines",
    singular: "virtualmachine",
    short_names: &["vm"],
    categories: &["all"],
    has_status: true,
    default: vm_default,
    validate: vm_validate,
    unknown_fields: vm_unknown,
    ..ResourceDef::OPAQUE
};

/// A VirtualMachineInstance-like dependent kind.
pub const VMI: ResourceDef = ResourceDef {
    kind: "VirtualMachineInstance",
    list_kind: "VirtualMachineInstanceList",
    plural: "virtualmachineinstances",
    singular: "virtualmachineinstance",
    short_names: &[],
    categories: &[],
    has_status: true,
    ..ResourceDef::OPAQUE
};

/// A built-in, namespaced kind without a status subresource.
pub const PVC: ResourceDef = ResourceDef {
    group: "",
    version: "v1",
    kind: "PersistentVolumeClaim",
    list_kind: "PersistentVolumeClaimList",
    plural: "persistentvolumeclaims",
    singular: "persistentvolumeclaim",
    short_names: &["pvc"],
    ..ResourceDef::OPAQUE
};

pub const NAMESPACE: ResourceDef = ResourceDef {
    kind: "Namespace",
    list_kind: "NamespaceList",
    plural: "namespaces",
    singular: "namespace",
    short_names: &["ns"],
    namespaced: false,
    has_status: true,
    ..PVC
};

pub const NODE: ResourceDef = ResourceDef {
    kind: "Node",
    list_kind: "NodeList",
    plural: "nodes",
    singular: "node",
    short_names: &["no"],
    namespaced: false,
    has_status: true,
    ..PVC
};

/// A store in a temporary directory (kept alive by the returned guard).
pub fn store() -> (Objects, tempfile::TempDir) {
    store_with(StoreConfig {
        gc_interval: Duration::from_millis(200),
        ..StoreConfig::default()
    })
}

pub fn store_with(config: StoreConfig) -> (Objects, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let objects = Objects::open_with(dir.path(), config).expect("open store");
    (objects, dir)
}

pub fn vm(name: &str) -> Value {
    json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
           "metadata": {"name": name, "labels": {"app": "web"}},
           "spec": {"cpus": 1}})
}

pub fn opts() -> WriteOptions {
    WriteOptions::default()
}

pub fn rv(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("a numeric resourceVersion")
}

/// Polls (bounded: 30 s, generous for a loaded CI machine) until `f` holds; the
/// collector runs on its own thread.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..1200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for: {what}");
}
