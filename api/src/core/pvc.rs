//! PersistentVolumeClaim (`v1`): defaulting (volumeMode `Filesystem`, phase `Pending`) and
//! validation (access modes, requested size) as kube-apiserver does them.

use crate::quantity;
use crate::status::Cause;
use crate::validation::{invalid, not_supported, required};
pub use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use serde_json::{json, Value};

const ACCESS_MODES: &[&str] = &[
    "ReadWriteOnce",
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOncePod",
];
const VOLUME_MODES: &[&str] = &["Block", "Filesystem"];

/// Defaults a PVC: `spec.volumeMode: Filesystem`, `status.phase: Pending`.
///
/// ```
/// let mut pvc = serde_json::json!({"metadata": {"name": "disk"}, "spec": {}});
/// api::core::pvc::default(&mut pvc);
/// assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
/// assert_eq!(pvc["status"]["phase"], "Pending");
/// ```
pub fn default(obj: &mut Value) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    if let Some(spec) = map.get_mut("spec").and_then(Value::as_object_mut) {
        if spec.get("volumeMode").is_none_or(Value::is_null) {
            spec.insert("volumeMode".into(), json!("Filesystem"));
        }
    }
    let status = map.entry("status").or_insert_with(|| json!({}));
    if let Some(s) = status.as_object_mut() {
        if s.get("phase")
            .is_none_or(|p| p.as_str().unwrap_or("").is_empty())
        {
            s.insert("phase".into(), json!("Pending"));
        }
    }
}

/// Validates a PVC beyond its schema.
///
/// ```
/// use serde_json::json;
/// let causes = api::core::pvc::validate(&json!({"spec": {"accessModes": ["ReadWriteOnce"],
///     "resources": {"requests": {"storage": "lots"}}}}));
/// assert_eq!(causes[0].field, "spec.resources.requests.storage");
/// ```
pub fn validate(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let Some(spec) = obj.get("spec").filter(|s| s.is_object()) else {
        return vec![Cause::required("spec")];
    };
    let modes = spec.get("accessModes").and_then(Value::as_array);
    if modes.is_none_or(Vec::is_empty) {
        causes.push(required(
            "spec.accessModes",
            "at least 1 access mode is required",
        ));
    }
    for (i, m) in modes.into_iter().flatten().enumerate() {
        let s = m.as_str().unwrap_or("");
        if !ACCESS_MODES.contains(&s) {
            causes.push(not_supported(
                format!("spec.accessModes[{i}]"),
                m,
                ACCESS_MODES,
            ));
        }
    }
    if modes.is_some_and(|m| m.len() > 1 && m.iter().any(|x| x == "ReadWriteOncePod")) {
        causes.push(crate::validation::forbidden(
            "spec.accessModes",
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
    match spec.pointer("/resources/requests/storage") {
        None => causes.push(Cause::required("spec.resources[storage]")),
        Some(q) => {
            let s = q
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| q.to_string());
            match quantity::parse(&s) {
                Ok(p) if p.is_zero() || p.is_negative() => {
                    causes.push(invalid(
                        "spec.resources.requests.storage",
                        q,
                        "must be greater than zero",
                    ));
                }
                Ok(_) => {}
                Err(e) => causes.push(invalid(
                    "spec.resources.requests.storage",
                    q,
                    &e.to_string(),
                )),
            }
        }
    }
    if let Some(vm) = spec.get("volumeMode").and_then(Value::as_str) {
        if !VOLUME_MODES.contains(&vm) {
            causes.push(not_supported(
                "spec.volumeMode",
                &Value::from(vm),
                VOLUME_MODES,
            ));
        }
    }
    causes
}
