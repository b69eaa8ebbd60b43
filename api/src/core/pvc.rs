//! PersistentVolumeClaim (`v1`): defaulting (volumeMode `Filesystem`, phase `Pending`) and
//! validation (access modes, requested size) as kube-apiserver does them.

use super::volume;
use crate::status::Cause;
use crate::validation::unless_one_of;
pub use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use serde_json::Value;

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
    volume::default(obj, |_| {});
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
    volume::validate(
        obj,
        "/resources/requests/storage",
        "spec.resources.requests.storage",
        "spec.resources[storage]",
        |spec, causes| {
            causes.extend(unless_one_of(
                "spec.volumeMode",
                spec.get("volumeMode").and_then(Value::as_str),
                VOLUME_MODES,
            ));
        },
    )
}
