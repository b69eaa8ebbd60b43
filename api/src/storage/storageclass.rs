//! StorageClass (`storage.k8s.io/v1`): defaulting (reclaimPolicy `Delete`, volumeBindingMode
//! `Immediate`) and validation, as kube-apiserver does them.

use crate::status::Cause;
use crate::validation::{dns1123_subdomain, invalid, unless_one_of};
pub use k8s_openapi::api::storage::v1::StorageClass;
use serde_json::{json, Value};

const RECLAIM_POLICIES: &[&str] = &["Delete", "Retain"];
const BINDING_MODES: &[&str] = &["Immediate", "WaitForFirstConsumer"];

/// Defaults a StorageClass.
///
/// ```
/// let mut sc = serde_json::json!({"metadata": {"name": "local"}, "provisioner": "monovirt.io/local"});
/// api::storage::storageclass::default(&mut sc);
/// assert_eq!(sc["reclaimPolicy"], "Delete");
/// assert_eq!(sc["volumeBindingMode"], "Immediate");
/// ```
pub fn default(obj: &mut Value) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    if map.get("reclaimPolicy").is_none_or(Value::is_null) {
        map.insert("reclaimPolicy".into(), json!("Delete"));
    }
    if map.get("volumeBindingMode").is_none_or(Value::is_null) {
        map.insert("volumeBindingMode".into(), json!("Immediate"));
    }
}

/// Validates a StorageClass beyond its schema.
///
/// ```
/// let causes = api::storage::storageclass::validate(&serde_json::json!({"metadata": {"name": "x"}}));
/// assert_eq!(causes[0].field, "provisioner");
/// ```
pub fn validate(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    match obj.get("provisioner").and_then(Value::as_str) {
        None | Some("") => causes.push(Cause::required("provisioner")),
        Some(p) => {
            // kube-apiserver: a qualified name, i.e. a DNS subdomain optionally with one '/'.
            let lower = p.to_ascii_lowercase();
            let ok = lower.len() <= 63 * 4
                && lower.split('/').count() <= 2
                && lower.split('/').all(|part| {
                    dns1123_subdomain(part).is_empty()
                        || part
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                });
            if !ok {
                causes.push(invalid(
                    "provisioner",
                    &Value::from(p),
                    "must be a qualified name such as kubernetes.io/no-provisioner",
                ));
            }
        }
    }
    for (field, allowed) in [
        ("reclaimPolicy", RECLAIM_POLICIES),
        ("volumeBindingMode", BINDING_MODES),
    ] {
        causes.extend(unless_one_of(
            field,
            obj.get(field).and_then(Value::as_str),
            allowed,
        ));
    }
    causes
}
