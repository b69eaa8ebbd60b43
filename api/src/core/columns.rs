//! The table cells kube-apiserver computes for built-in kinds instead of reading one field
//! (its `printers/internalversion`): a Node's Status and Roles, a PVC's Access Modes and
//! Capacity, an Event's Object and Last Seen, a default StorageClass's name.

use crate::resource::{PrinterColumn, ResourceDef};
use serde_json::Value;
use std::collections::BTreeSet;

/// The computed cell of `column` for `obj`, or `None` when the column is read by JSONPath.
pub fn computed(def: &ResourceDef, column: &PrinterColumn, obj: &Value) -> Option<Value> {
    let text = match (def.group, def.kind, column.name) {
        ("", "Node", "Status") => node_status(obj),
        ("", "Node", "Roles") => node_roles(obj),
        ("", "PersistentVolumeClaim", "Status") => pvc_status(obj),
        ("", "PersistentVolumeClaim", "Capacity") => pvc_capacity(obj),
        ("", "PersistentVolumeClaim", "Access Modes") => {
            access_modes(obj.pointer("/status/accessModes"))
        }
        ("", "PersistentVolumeClaim", "VolumeAttributesClass") => {
            str_at(obj, "/spec/volumeAttributesClassName").unwrap_or_else(|| "<unset>".to_string())
        }
        ("", "Event", "Object") => event_object(obj),
        ("", "Namespace", "Status") => str_at(obj, "/status/phase").unwrap_or_default(),
        _ => return None,
    };
    Some(Value::String(text))
}

/// The Name cell: the name, with ` (default)` for the default StorageClass as kubectl shows it.
pub fn name(def: &ResourceDef, obj: &Value) -> Value {
    let name = obj
        .pointer("/metadata/name")
        .cloned()
        .unwrap_or(Value::Null);
    if def.kind == "StorageClass" && is_default_storage_class(obj) {
        if let Some(n) = name.as_str() {
            return Value::String(format!("{n} (default)"));
        }
    }
    name
}

/// Whether the StorageClass carries the default-class annotation.
pub fn is_default_storage_class(obj: &Value) -> bool {
    let ann = obj.pointer("/metadata/annotations");
    [
        "storageclass.kubernetes.io/is-default-class",
        "storageclass.beta.kubernetes.io/is-default-class",
    ]
    .iter()
    .any(|k| ann.and_then(|a| a.get(*k)).and_then(Value::as_str) == Some("true"))
}

fn str_at(obj: &Value, pointer: &str) -> Option<String> {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn node_status(obj: &Value) -> String {
    let ready = obj
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
        })
        .and_then(|c| c.get("status").and_then(Value::as_str));
    let mut status = match ready {
        Some("True") => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if obj.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    status
}

fn node_roles(obj: &Value) -> String {
    let mut roles = BTreeSet::new();
    if let Some(labels) = obj.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role.to_string());
                }
            } else if k == "kubernetes.io/role" {
                if let Some(r) = v.as_str().filter(|r| !r.is_empty()) {
                    roles.insert(r.to_string());
                }
            }
        }
    }
    if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.into_iter().collect::<Vec<_>>().join(",")
    }
}

fn pvc_status(obj: &Value) -> String {
    if obj
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|d| !d.is_null())
    {
        return "Terminating".to_string();
    }
    str_at(obj, "/status/phase").unwrap_or_default()
}

fn pvc_capacity(obj: &Value) -> String {
    if obj
        .pointer("/spec/volumeName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty()
    {
        return String::new();
    }
    match obj.pointer("/status/capacity/storage") {
        Some(Value::String(s)) => s.clone(),
        Some(v) if !v.is_null() => v.to_string(),
        _ => String::new(),
    }
}

/// Access modes the way kubectl abbreviates them: `RWO,ROX,RWX,RWOP`.
fn access_modes(modes: Option<&Value>) -> String {
    let modes: Vec<&str> = modes
        .and_then(Value::as_array)
        .map(|m| m.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    for (long, short) in [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ] {
        if modes.contains(&long) {
            out.push(short);
        }
    }
    out.join(",")
}

fn event_object(obj: &Value) -> String {
    let kind = str_at(obj, "/involvedObject/kind")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let name = str_at(obj, "/involvedObject/name").unwrap_or_default();
    format!("{kind}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::find_kind;
    use serde_json::json;

    fn col<'a>(def: &'a ResourceDef, name: &str) -> &'a PrinterColumn {
        def.columns
            .iter()
            .find(|c| c.name == name)
            .expect("column exists")
    }

    #[test]
    fn node_status_and_roles() {
        let def = find_kind("", "Node").expect("nodes served");
        let node = json!({"metadata": {"name": "n1", "labels": {
                "node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/worker": ""}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": "192.0.2.10"}]}});
        assert_eq!(
            computed(def, col(def, "Status"), &node),
            Some(json!("Ready,SchedulingDisabled"))
        );
        assert_eq!(
            computed(def, col(def, "Roles"), &node),
            Some(json!("control-plane,worker"))
        );
        assert_eq!(computed(def, col(def, "Internal-IP"), &node), None);
        let bare = json!({"metadata": {"name": "n2"}});
        assert_eq!(
            computed(def, col(def, "Status"), &bare),
            Some(json!("Unknown"))
        );
        assert_eq!(
            computed(def, col(def, "Roles"), &bare),
            Some(json!("<none>"))
        );
    }

    #[test]
    fn pvc_cells() {
        let def = find_kind("", "PersistentVolumeClaim").expect("pvcs served");
        let pvc = json!({"metadata": {"name": "d"}, "spec": {"volumeName": "pv-1"},
            "status": {"phase": "Bound", "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
                       "capacity": {"storage": "10Gi"}}});
        assert_eq!(
            computed(def, col(def, "Access Modes"), &pvc),
            Some(json!("RWO,RWX"))
        );
        assert_eq!(
            computed(def, col(def, "Capacity"), &pvc),
            Some(json!("10Gi"))
        );
        assert_eq!(
            computed(def, col(def, "Status"), &pvc),
            Some(json!("Bound"))
        );
        assert_eq!(
            computed(def, col(def, "VolumeAttributesClass"), &pvc),
            Some(json!("<unset>"))
        );
    }

    #[test]
    fn default_storage_class_name() {
        let def = find_kind("storage.k8s.io", "StorageClass").expect("storageclasses served");
        let sc = json!({"metadata": {"name": "local", "annotations": {
            "storageclass.kubernetes.io/is-default-class": "true"}}});
        assert_eq!(name(def, &sc), json!("local (default)"));
    }
}
