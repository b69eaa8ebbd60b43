//! StorageClasses of the local provisioner (the hostpath provisioner's role): a class with
//! `provisioner: monovirt.io/local` names a directory on the node in `parameters.path`
//! (without it, `<data-dir>/storage/<class>`); each bound claim gets `pvc-<uid>/disk.img`
//! there. `parameters.shared: "true"` marks a directory shared between nodes, which allows
//! ReadWriteMany claims. `monovirt serve` creates the default class `local` under
//! `<data-dir>/storage`.

use super::annotation;
use crate::client::{Api, Client, ClientError};
use crate::store::WriteOptions;
use api::storage::storageclass::StorageClass;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The provisioner name of monovirt's local volumes.
pub const PROVISIONER: &str = "monovirt.io/local";
/// The default class `serve` creates.
pub const DEFAULT_CLASS: &str = "local";
/// The class parameter naming its directory.
pub const PATH_PARAMETER: &str = "path";
/// The class parameter marking its directory as shared between nodes.
pub const SHARED_PARAMETER: &str = "shared";

/// The volumes directory of the default class.
pub fn default_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("storage")
}

/// Whether the local provisioner serves `sc`.
pub fn is_ours(sc: &StorageClass) -> bool {
    sc.provisioner == PROVISIONER
}

/// Whether `sc` is annotated as the default class.
pub fn is_default(sc: &StorageClass) -> bool {
    sc.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotation::DEFAULT_CLASS))
        .is_some_and(|v| v == "true")
}

/// Whether the class's directory is shared between nodes (ReadWriteMany allowed).
pub fn is_shared(sc: &StorageClass) -> bool {
    sc.parameters
        .as_ref()
        .and_then(|p| p.get(SHARED_PARAMETER))
        .is_some_and(|v| v == "true")
}

/// The directory holding the volumes of `sc`.
///
/// ```
/// use std::path::Path;
/// let sc: api::storage::storageclass::StorageClass = serde_json::from_value(serde_json::json!({
///     "metadata": {"name": "ocs-gold"}, "provisioner": "monovirt.io/local",
///     "parameters": {"path": "/srv/gold"}})).unwrap();
/// assert_eq!(monovirt::storage::class::directory(&sc, Path::new("/var/lib/monovirt")),
///            Path::new("/srv/gold"));
/// ```
pub fn directory(sc: &StorageClass, data_dir: &Path) -> PathBuf {
    if let Some(p) = sc
        .parameters
        .as_ref()
        .and_then(|p| p.get(PATH_PARAMETER))
        .filter(|p| !p.is_empty())
    {
        return PathBuf::from(p);
    }
    let name = sc.metadata.name.as_deref().unwrap_or_default();
    if name == DEFAULT_CLASS {
        default_dir(data_dir)
    } else {
        default_dir(data_dir).join(name)
    }
}

/// The class a claim asking for `requested` gets: that one by name, or (unset) the default
/// class, the newest when several are marked (as Kubernetes picks).
pub fn pick(classes: &[Arc<StorageClass>], requested: Option<&str>) -> Option<Arc<StorageClass>> {
    match requested {
        Some(name) => classes
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
            .cloned(),
        None => classes
            .iter()
            .filter(|c| is_default(c))
            .max_by_key(|c| c.metadata.creation_timestamp.as_ref().map(|t| t.0))
            .cloned(),
    }
}

/// Creates the default class `local` unless it exists.
#[allow(clippy::result_large_err)]
pub async fn ensure_default(client: &Client, data_dir: &Path) -> Result<(), ClientError> {
    let def = api::resource::find_kind("storage.k8s.io", "StorageClass")
        .expect("the registry serves StorageClass");
    let classes: Api<serde_json::Value> = Api::all(client.clone(), def);
    if classes.get_opt(DEFAULT_CLASS).await?.is_some() {
        return Ok(());
    }
    let sc = json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": DEFAULT_CLASS,
            "annotations": {annotation::DEFAULT_CLASS: "true"}},
        "provisioner": PROVISIONER,
        "parameters": {PATH_PARAMETER: default_dir(data_dir).display().to_string()},
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
        "allowVolumeExpansion": false,
    });
    match classes.create(&sc, &WriteOptions::default()).await {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(409) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sc(v: serde_json::Value) -> Arc<StorageClass> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn picks_by_name_or_the_newest_default() {
        let classes = vec![
            sc(
                json!({"metadata": {"name": "a", "creationTimestamp": "2026-01-01T00:00:00Z",
                "annotations": {annotation::DEFAULT_CLASS: "true"}}, "provisioner": PROVISIONER}),
            ),
            sc(
                json!({"metadata": {"name": "b", "creationTimestamp": "2026-02-01T00:00:00Z",
                "annotations": {annotation::DEFAULT_CLASS: "true"}}, "provisioner": PROVISIONER}),
            ),
            sc(
                json!({"metadata": {"name": "c"}, "provisioner": "other.io/x",
                "parameters": {SHARED_PARAMETER: "true"}}),
            ),
        ];
        assert_eq!(
            pick(&classes, None).unwrap().metadata.name.as_deref(),
            Some("b")
        );
        assert_eq!(
            pick(&classes, Some("c")).unwrap().metadata.name.as_deref(),
            Some("c")
        );
        assert!(pick(&classes, Some("zz")).is_none());
        assert!(!is_ours(&classes[2]) && is_shared(&classes[2]));
        assert_eq!(
            directory(&classes[0], Path::new("/d")),
            Path::new("/d/storage/a")
        );
    }
}
