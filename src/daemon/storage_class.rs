//! The config's `[storage.classes]` as StorageClass objects of the local provisioner:
//! each `NAME = "/dir"` becomes (or updates) StorageClass `NAME` with
//! `provisioner: monovirt.io/local` and `parameters.path: /dir`, and the directory is made.
//! `local` is the default class (as the one `serve` makes without a config); the others are
//! picked by `storageClassName`. A class's parameters are immutable, so a directory changed
//! in the config replaces the class; a bound volume keeps the path its PersistentVolume
//! names.

use crate::client::{Api, Client, ClientError};
use crate::storage::{annotation, class};
use crate::store::{DeleteOptions, WriteOptions};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// The label marking a class as made from the config file.
pub const CONFIGURED_LABEL: &str = "monovirt.io/configured";

/// Errors applying the configured classes.
#[derive(Debug, thiserror::Error)]
pub enum StorageClassError {
    #[error("Cannot create the directory {} of storage class {class}", dir.display())]
    Dir {
        class: String,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot write storage class {0}")]
    Write(String, #[source] ClientError),
}

/// The StorageClass the config line `name = dir` stands for.
pub fn object(name: &str, dir: &Path) -> Value {
    let mut annotations = serde_json::Map::new();
    if name == class::DEFAULT_CLASS {
        annotations.insert(annotation::DEFAULT_CLASS.into(), json!("true"));
    }
    json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": name, "annotations": annotations,
            "labels": {CONFIGURED_LABEL: "true"}},
        "provisioner": class::PROVISIONER,
        "parameters": {class::PATH_PARAMETER: dir.display().to_string()},
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
        "allowVolumeExpansion": false,
    })
}

/// Makes each configured class's directory (mode 0700, like the data dir) and creates its
/// StorageClass, or points an existing one at the configured directory.
#[allow(clippy::result_large_err)]
pub async fn apply(
    client: &Client,
    classes: &BTreeMap<String, PathBuf>,
) -> Result<(), StorageClassError> {
    let def = api::resource::find_kind("storage.k8s.io", "StorageClass")
        .expect("the registry serves StorageClass");
    let api: Api<Value> = Api::all(client.clone(), def);
    for (name, dir) in classes {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StorageClassError::Dir {
                class: name.clone(),
                dir: dir.clone(),
                source,
            })?;
        let want = object(name, dir);
        let write = |e| StorageClassError::Write(name.clone(), e);
        match api.get_opt(name).await.map_err(write)? {
            None => {
                api.create(&want, &WriteOptions::default())
                    .await
                    .map_err(write)?;
                tracing::info!(class = %name, dir = %dir.display(), "storage class created");
            }
            Some(have) if have["parameters"] == want["parameters"] => {}
            Some(have) => {
                // A class's parameters are immutable (as in Kubernetes): replace it. Bound
                // volumes keep the path their PersistentVolume names.
                api.delete(name, &DeleteOptions::default())
                    .await
                    .map_err(write)?;
                api.create(&want, &WriteOptions::default())
                    .await
                    .map_err(write)?;
                tracing::warn!(class = %name, dir = %dir.display(),
                    was = %have["parameters"][class::PATH_PARAMETER],
                    "storage class replaced: it now points at the configured directory");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Objects;

    #[tokio::test]
    async fn creates_then_repoints_classes_and_makes_their_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        let client = Client::local(Objects::in_memory().expect("store"));
        let def = api::resource::find_kind("storage.k8s.io", "StorageClass").expect("def");
        let api: Api<Value> = Api::all(client.clone(), def);
        let mut classes = BTreeMap::new();
        classes.insert("local".to_string(), dir.path().join("a"));
        classes.insert("gold".to_string(), dir.path().join("g/old"));
        apply(&client, &classes).await.expect("apply");
        assert!(dir.path().join("a").is_dir() && dir.path().join("g/old").is_dir());
        let local = api.get("local").await.expect("local");
        assert_eq!(
            local["metadata"]["annotations"][annotation::DEFAULT_CLASS],
            "true"
        );
        assert_eq!(local["provisioner"], class::PROVISIONER);
        let gold = api.get("gold").await.expect("gold");
        assert!(gold["metadata"]["annotations"]
            .get(annotation::DEFAULT_CLASS)
            .is_none());
        assert_eq!(
            gold["parameters"]["path"],
            dir.path().join("g/old").display().to_string()
        );
        // Applied again unchanged: nothing is written.
        let rv = gold["metadata"]["resourceVersion"].clone();
        apply(&client, &classes).await.expect("again");
        assert_eq!(
            api.get("gold").await.expect("gold")["metadata"]["resourceVersion"],
            rv
        );
        // A new directory in the config: the class follows it.
        classes.insert("gold".to_string(), dir.path().join("g/new"));
        apply(&client, &classes).await.expect("repoint");
        assert_eq!(
            api.get("gold").await.expect("gold")["parameters"]["path"],
            dir.path().join("g/new").display().to_string()
        );
    }
}
