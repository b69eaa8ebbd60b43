//! Which fields may not change once an object exists, per kind, as kube-apiserver's update
//! strategies and KubeVirt's and CDI's update admitters enforce it: a running VMI's spec, a
//! migration's spec, a DataVolume's spec, a PVC's spec (except a larger storage request),
//! a StorageClass's provisioner, parameters and policies. The store calls
//! [`validate_update`] on updates and patches, after [`crate::resource::ResourceDef::validate`].

use crate::quantity;
use crate::resource::ResourceDef;
use crate::status::Cause;
use crate::validation::{forbidden, invalid};
use serde_json::Value;

/// The causes that forbid replacing `old` by `new` (both of kind `def`).
///
/// ```
/// use serde_json::json;
/// let def = api::resource::find_kind("kubevirt.io", "VirtualMachineInstanceMigration").unwrap();
/// let old = json!({"spec": {"vmiName": "a"}});
/// let new = json!({"spec": {"vmiName": "b"}});
/// assert_eq!(api::immutability::validate_update(def, &old, &new)[0].field, "spec");
/// assert!(api::immutability::validate_update(def, &old, &old).is_empty());
/// ```
pub fn validate_update(def: &ResourceDef, old: &Value, new: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let changed = |pointer: &str| old.pointer(pointer) != new.pointer(pointer);
    let frozen_spec = match (def.group, def.kind) {
        ("kubevirt.io", "VirtualMachineInstance") => Some("update of VMI object is restricted"),
        ("kubevirt.io", "VirtualMachineInstanceMigration") => {
            Some("update of Migration object's spec is restricted")
        }
        ("cdi.kubevirt.io", "DataVolume") => Some("Cannot update spec for DataVolume"),
        _ => None,
    };
    if let Some(message) = frozen_spec {
        if changed("/spec") {
            causes.push(forbidden("spec", message));
        }
    }
    match (def.group, def.kind) {
        ("", "PersistentVolumeClaim") => pvc(old, new, &mut causes),
        ("storage.k8s.io", "StorageClass") => {
            for field in [
                "provisioner",
                "parameters",
                "reclaimPolicy",
                "volumeBindingMode",
            ] {
                if changed(&format!("/{field}")) {
                    causes.push(forbidden(
                        field,
                        &format!("updates to {field} are forbidden."),
                    ));
                }
            }
        }
        _ => {}
    }
    causes
}

/// kube-apiserver: a PVC's spec is immutable after creation except resources.requests for
/// bound claims (which may only grow) and volumeAttributesClassName.
fn pvc(old: &Value, new: &Value, causes: &mut Vec<Cause>) {
    let strip = |v: &Value| {
        let mut spec = v.get("spec").cloned().unwrap_or(Value::Null);
        if let Some(s) = spec.as_object_mut() {
            s.remove("resources");
            s.remove("volumeAttributesClassName");
            // The binder fills volumeName in; setting it once is not a user change.
            s.remove("volumeName");
        }
        spec
    };
    if strip(old) != strip(new) {
        causes.push(forbidden(
            "spec",
            "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
        ));
    }
    let old_name = old
        .pointer("/spec/volumeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    let new_name = new
        .pointer("/spec/volumeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !old_name.is_empty() && old_name != new_name {
        causes.push(invalid(
            "spec.volumeName",
            &Value::from(new_name),
            "field is immutable",
        ));
    }
    let size = |v: &Value| {
        v.pointer("/spec/resources/requests/storage")
            .and_then(Value::as_str)
            .and_then(|s| quantity::parse(s).ok())
    };
    if let (Some(before), Some(after)) = (size(old), size(new)) {
        if after < before {
            causes.push(forbidden(
                "spec.resources.requests.storage",
                &format!(
                    "field can not be less than previous value ({})",
                    render(old)
                ),
            ));
        }
    }
}

fn render(v: &Value) -> String {
    v.pointer("/spec/resources/requests/storage")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::find_kind;
    use serde_json::json;

    #[test]
    fn vmi_spec_is_frozen_but_metadata_and_status_are_not() {
        let def = find_kind("kubevirt.io", "VirtualMachineInstance").expect("served");
        let old =
            json!({"metadata": {"labels": {}}, "spec": {"domain": {"devices": {}}}, "status": {}});
        let mut new = old.clone();
        new["metadata"]["labels"]["a"] = json!("b");
        new["status"]["phase"] = json!("Running");
        assert!(validate_update(def, &old, &new).is_empty());
        new["spec"]["domain"]["cpu"] = json!({"cores": 2});
        assert_eq!(validate_update(def, &old, &new)[0].field, "spec");
    }

    #[test]
    fn pvc_may_grow_only() {
        let def = find_kind("", "PersistentVolumeClaim").expect("served");
        let old = json!({"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
        let mut grow = old.clone();
        grow["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        grow["spec"]["volumeName"] = json!("pv-1");
        assert!(validate_update(def, &old, &grow).is_empty());
        let mut shrink = old.clone();
        shrink["spec"]["resources"]["requests"]["storage"] = json!("512Mi");
        assert_eq!(
            validate_update(def, &old, &shrink)[0].field,
            "spec.resources.requests.storage"
        );
        let mut modes = old.clone();
        modes["spec"]["accessModes"] = json!(["ReadWriteMany"]);
        assert_eq!(validate_update(def, &old, &modes)[0].field, "spec");
        let mut rebind = grow.clone();
        rebind["spec"]["volumeName"] = json!("pv-2");
        assert_eq!(
            validate_update(def, &grow, &rebind)[0].field,
            "spec.volumeName"
        );
    }

    #[test]
    fn storage_class_and_vm() {
        let sc = find_kind("storage.k8s.io", "StorageClass").expect("served");
        let old = json!({"provisioner": "a", "reclaimPolicy": "Delete"});
        let new =
            json!({"provisioner": "b", "reclaimPolicy": "Delete", "allowVolumeExpansion": true});
        assert_eq!(validate_update(sc, &old, &new)[0].field, "provisioner");
        let vm = find_kind("kubevirt.io", "VirtualMachine").expect("served");
        let new = json!({"spec": {"runStrategy": "Always"}});
        assert!(validate_update(vm, &json!({"spec": {}}), &new).is_empty());
    }
}
