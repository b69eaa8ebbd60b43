//! PersistentVolume (`v1`, cluster-scoped): defaulting (reclaimPolicy `Retain`, volumeMode
//! `Filesystem`, phase `Pending`) and validation, as kube-apiserver does them. monovirt's
//! local provisioner creates one per bound claim, a `hostPath` directory holding `disk.img`.

use super::volume;
use crate::status::Cause;
use crate::validation::{forbidden, invalid, required, unless_one_of};
pub use k8s_openapi::api::core::v1::PersistentVolume;
use serde_json::{json, Value};

const RECLAIM_POLICIES: &[&str] = &["Retain", "Delete", "Recycle"];

/// Defaults a PersistentVolume.
///
/// ```
/// let mut pv = serde_json::json!({"metadata": {"name": "pv"}, "spec": {}});
/// api::core::pv::default(&mut pv);
/// assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
/// assert_eq!(pv["status"]["phase"], "Pending");
/// ```
pub fn default(obj: &mut Value) {
    volume::default(obj, |spec| {
        if spec
            .get("persistentVolumeReclaimPolicy")
            .is_none_or(Value::is_null)
        {
            spec.insert("persistentVolumeReclaimPolicy".into(), json!("Retain"));
        }
    });
}

/// Validates a PersistentVolume beyond its schema: access modes, capacity, reclaim policy,
/// and exactly one volume source (monovirt understands `hostPath` and `local`).
///
/// ```
/// let causes = api::core::pv::validate(&serde_json::json!({"spec": {
///     "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}}}));
/// assert_eq!(causes[0].field, "spec");
/// ```
pub fn validate(obj: &Value) -> Vec<Cause> {
    volume::validate(
        obj,
        "/capacity/storage",
        "spec.capacity.storage",
        "spec.capacity[storage]",
        |spec, causes| {
            causes.extend(unless_one_of(
                "spec.persistentVolumeReclaimPolicy",
                spec.get("persistentVolumeReclaimPolicy")
                    .and_then(Value::as_str),
                RECLAIM_POLICIES,
            ));
            const SOURCES: &[&str] = &[
                "hostPath", "local", "nfs", "csi", "iscsi", "rbd", "cephfs", "fc",
            ];
            let sources = SOURCES
                .iter()
                .filter(|s| spec.get(**s).is_some_and(|v| !v.is_null()))
                .count();
            match sources {
                0 => causes.push(required("spec", "must specify a volume type")),
                1 => {}
                _ => causes.push(forbidden("spec", "may not specify more than 1 volume type")),
            }
            for src in ["hostPath", "local"] {
                if let Some(p) = spec.get(src).filter(|v| !v.is_null()) {
                    match p.get("path").and_then(Value::as_str) {
                        Some(path) if path.starts_with('/') => {}
                        Some(path) => causes.push(invalid(
                            format!("spec.{src}.path"),
                            &Value::from(path),
                            "must be an absolute path",
                        )),
                        None => causes.push(Cause::required(format!("spec.{src}.path"))),
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_path_volume_is_valid() {
        let pv = json!({"spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"},
            "hostPath": {"path": "/var/lib/monovirt/storage/pvc-1"}}});
        assert!(validate(&pv).is_empty(), "{:?}", validate(&pv));
        let rel = json!({"spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"},
            "hostPath": {"path": "relative"}, "persistentVolumeReclaimPolicy": "Keep"}});
        let fields: Vec<_> = validate(&rel).into_iter().map(|c| c.field).collect();
        assert_eq!(
            fields,
            ["spec.persistentVolumeReclaimPolicy", "spec.hostPath.path"]
        );
    }
}
