//! The garbage collector and namespace finalizer, one thread (`store-gc`).
//!
//! - **Background**: when an owner is removed, each dependent whose ownerReferences no
//!   longer name a live owner is deleted; one that still has live owners only loses the
//!   reference to the dead one.
//! - **Foreground**: the owner carries the `foregroundDeletion` finalizer; its dependents
//!   are deleted (themselves in the foreground when they own others), and the finalizer
//!   is removed once no dependent with `blockOwnerDeletion` remains.
//! - **Orphan**: the owner carries the `orphan` finalizer; the references to it are
//!   removed from its dependents, then the finalizer.
//! - **Namespaces**: a terminating namespace's contents are deleted; once none remain its
//!   `kubernetes` finalizer is removed and the namespace goes.
//!
//! All of it is driven by durable state (the owner and `~gc` indexes), so work
//! interrupted by a crash resumes at the next start. The thread also compacts the watch
//! log.

use super::key::{index, Key};
use super::metadata as meta;
use super::objects::{internal, tx_delete, Inner, Objects, Tx};
use super::options::{DeleteOptions, Propagation};
use crate::store::backend::EventType;
use api::status::ApiError;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Weak;
use std::thread::JoinHandle;

/// The finalizer of an Orphan delete.
pub(crate) const ORPHAN: &str = "orphan";
/// The finalizer of a Foreground delete.
pub(crate) const FOREGROUND: &str = "foregroundDeletion";
/// The namespace finalizer (in `spec.finalizers`).
const NAMESPACE_FINALIZER: &str = "kubernetes";

/// Work for the collector.
pub(crate) enum GcSignal {
    /// Objects with these uids were removed: look after their dependents.
    Owners(Vec<String>),
    /// An object needs finishing (foreground, orphan, terminating namespace).
    Marked,
    /// Check everything (at start and periodically).
    Sweep,
    /// The watch log may be due for compaction.
    Compact,
    /// The last handle was dropped: stop.
    Shutdown,
}

pub(crate) fn start(inner: Weak<Inner>, rx: Receiver<GcSignal>) -> JoinHandle<()> {
    let interval = inner
        .upgrade()
        .map(|i| i.config.gc_interval)
        .unwrap_or_default();
    std::thread::Builder::new()
        .name("store-gc".into())
        .spawn(move || loop {
            let mut signals = match rx.recv_timeout(interval) {
                Ok(s) => vec![s],
                Err(RecvTimeoutError::Timeout) => vec![GcSignal::Sweep],
                Err(RecvTimeoutError::Disconnected) => return,
            };
            signals.extend(rx.try_iter());
            if signals.iter().any(|s| matches!(s, GcSignal::Shutdown)) {
                return;
            }
            let Some(inner) = inner.upgrade() else { return };
            let objects = Objects { inner, life: None };
            if let Err(e) = collect(&objects, signals) {
                tracing::warn!(error = %e, "garbage collection pass failed; retrying later");
            }
        })
        .expect("spawning the garbage collector thread")
}

fn write(
    objects: &Objects,
    f: impl FnOnce(&mut Tx) -> Result<(), ApiError>,
) -> Result<(), ApiError> {
    let ((), ack) = objects.write(false, f)?;
    match ack {
        Some(ack) => ack.wait_blocking(),
        None => Ok(()),
    }
}

fn collect(objects: &Objects, signals: Vec<GcSignal>) -> Result<(), ApiError> {
    let backend = &*objects.inner.backend;
    let mut dead: BTreeSet<String> = BTreeSet::new();
    let mut sweep = false;
    let mut marked = false;
    for s in signals {
        match s {
            GcSignal::Owners(uids) => dead.extend(uids),
            GcSignal::Sweep => sweep = true,
            GcSignal::Marked => marked = true,
            GcSignal::Compact | GcSignal::Shutdown => {}
        }
    }
    if sweep {
        for (k, _) in backend
            .scan(index::OWNERS, None, usize::MAX)
            .map_err(internal)?
        {
            if let Some((owner, _)) = index::split_owner(&k) {
                if backend.get(&index::uid(owner)).map_err(internal)?.is_none() {
                    dead.insert(owner.to_string());
                }
            }
        }
    }
    for uid in &dead {
        collect_dependents(objects, uid)?;
    }
    if sweep || marked || !dead.is_empty() {
        for (k, _) in backend
            .scan(index::GC, None, usize::MAX)
            .map_err(internal)?
        {
            let object_key = k.trim_start_matches("~gc").to_string();
            if let Err(e) = finish(objects, &k, &object_key) {
                tracing::warn!(key = %object_key, error = %e, "finishing a deletion failed");
            }
        }
    }
    objects.compact()
}

/// Deletes (or un-references) the dependents of a removed owner, one write each.
fn collect_dependents(objects: &Objects, owner_uid: &str) -> Result<(), ApiError> {
    let deps = {
        let ((deps, _), _) = objects.write(true, |tx| Ok((tx.dependents(owner_uid)?, ())))?;
        deps
    };
    for dep in deps {
        let result = write(objects, |tx| {
            if tx.key_of_uid(owner_uid)?.is_some() {
                return Ok(()); // The owner exists (it was not removed after all).
            }
            let Some(key) = Key::decode(&dep) else {
                tx.drop_index(index::owner(owner_uid, &dep));
                return Ok(());
            };
            let Some(obj) = tx.read(&key)? else {
                tx.drop_index(index::owner(owner_uid, &dep));
                return Ok(());
            };
            let refs = meta::owner_refs(&obj);
            if !refs.iter().any(|r| r.uid == owner_uid) {
                tx.drop_index(index::owner(owner_uid, &dep));
                return Ok(());
            }
            let mut alive = false;
            for r in refs.iter().filter(|r| r.uid != owner_uid) {
                alive |= tx.key_of_uid(&r.uid)?.is_some();
            }
            if alive {
                let mut new = obj;
                meta::remove_owner_ref(&mut new, owner_uid);
                tx.put(&key, new, EventType::Modified).map(|_| ())
            } else {
                tx_delete(tx, &key, &DeleteOptions::default()).map(|_| ())
            }
        });
        if let Err(e) = result {
            tracing::warn!(dependent = %dep, error = %e, "collecting a dependent failed");
        }
    }
    Ok(())
}

/// Removes `finalizer` from the object (and the object, if nothing else holds it).
fn release(tx: &mut Tx, key: &Key, obj: Value, finalizer: &str) -> Result<(), ApiError> {
    let mut new = obj;
    let finalizers: Vec<String> = meta::finalizers(&new)
        .into_iter()
        .filter(|f| f != finalizer)
        .collect();
    meta::set_finalizers(&mut new, &finalizers);
    if finalizer == NAMESPACE_FINALIZER {
        if let Some(Value::Array(list)) = new.pointer_mut("/spec/finalizers") {
            list.retain(|f| f.as_str() != Some(NAMESPACE_FINALIZER));
        }
    }
    let spec_finalizers_left = new
        .pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    if finalizers.is_empty() && !spec_finalizers_left {
        tx.remove(key, new).map(|_| ())
    } else {
        tx.put(key, new, EventType::Modified).map(|_| ())
    }
}

/// Advances the deletion of one marked object.
fn finish(objects: &Objects, marker: &str, object_key: &str) -> Result<(), ApiError> {
    let key = Key::decode(object_key);
    let current = match &key {
        Some(k) => objects.write(true, |tx| tx.read(k))?.0,
        None => None,
    };
    let (Some(key), Some(obj)) = (key, current) else {
        return write(objects, |tx| {
            tx.drop_index(marker.to_string());
            Ok(())
        });
    };
    if !meta::is_deleting(&obj) {
        return write(objects, |tx| {
            tx.drop_index(marker.to_string());
            Ok(())
        });
    }
    let finalizers = meta::finalizers(&obj);
    let uid = meta::uid(&obj).unwrap_or("").to_string();
    if key.group.is_empty() && key.resource == "namespaces" {
        return finish_namespace(objects, &key);
    }
    if finalizers.iter().any(|f| f == ORPHAN) {
        write(objects, |tx| {
            for dep in tx.dependents(&uid)? {
                let Some(dep_key) = Key::decode(&dep) else {
                    continue;
                };
                if let Some(mut d) = tx.read(&dep_key)? {
                    meta::remove_owner_ref(&mut d, &uid);
                    tx.put(&dep_key, d, EventType::Modified)?;
                }
            }
            let Some(obj) = tx.read(&key)? else {
                return Ok(());
            };
            release(tx, &key, obj, ORPHAN)
        })?;
    }
    if finalizers.iter().any(|f| f == FOREGROUND) {
        let deps = objects.write(true, |tx| tx.dependents(&uid))?.0;
        for dep in &deps {
            let Some(dep_key) = Key::decode(dep) else {
                continue;
            };
            let result = write(objects, |tx| {
                let Some(d) = tx.read(&dep_key)? else {
                    return Ok(());
                };
                if meta::is_deleting(&d) {
                    return Ok(());
                }
                let owns_others = meta::uid(&d)
                    .map(|u| tx.dependents(u))
                    .transpose()?
                    .is_some_and(|v| !v.is_empty());
                let propagation = if owns_others {
                    Propagation::Foreground
                } else {
                    Propagation::Background
                };
                let opts = DeleteOptions {
                    propagation: Some(propagation),
                    ..DeleteOptions::default()
                };
                tx_delete(tx, &dep_key, &opts).map(|_| ())
            });
            if let Err(e) = result {
                tracing::warn!(dependent = %dep, error = %e, "foreground delete of a dependent failed");
            }
        }
        write(objects, |tx| {
            for dep in tx.dependents(&uid)? {
                let Some(dep_key) = Key::decode(&dep) else {
                    continue;
                };
                if let Some(d) = tx.read(&dep_key)? {
                    let blocks = meta::owner_refs(&d)
                        .iter()
                        .any(|r| r.uid == uid && r.block_owner_deletion);
                    if blocks {
                        return Ok(()); // Wait for it to go.
                    }
                }
            }
            let Some(obj) = tx.read(&key)? else {
                return Ok(());
            };
            release(tx, &key, obj, FOREGROUND)
        })?;
    }
    Ok(())
}

fn finish_namespace(objects: &Objects, ns_key: &Key) -> Result<(), ApiError> {
    let backend = &*objects.inner.backend;
    let ns = ns_key.name.as_str();
    let mut remaining = 0usize;
    let mut start: Option<String> = None;
    loop {
        let chunk = backend
            .scan("/", start.as_deref(), 1000)
            .map_err(internal)?;
        let done = chunk.len() < 1000;
        for (k, _) in chunk {
            start = Some(k.clone());
            let Some(key) = Key::decode(&k) else { continue };
            if key.namespace.as_deref() != Some(ns) {
                continue;
            }
            remaining += 1;
            let result = write(objects, |tx| {
                match tx_delete(tx, &key, &DeleteOptions::default()) {
                    Ok(_) => Ok(()),
                    Err(e) if e.code == 404 => Ok(()),
                    Err(e) => Err(e),
                }
            });
            if let Err(e) = result {
                tracing::warn!(key = %k, error = %e, "deleting namespace content failed");
            }
        }
        if done {
            break;
        }
    }
    if remaining > 0 {
        // Deleted now or still held by finalizers: check again.
        let left = backend
            .scan("/", None, usize::MAX)
            .map_err(internal)?
            .into_iter()
            .filter_map(|(k, _)| Key::decode(&k))
            .any(|k| k.namespace.as_deref() == Some(ns));
        if left {
            return Ok(());
        }
    }
    write(objects, |tx| {
        let Some(obj) = tx.read(ns_key)? else {
            return Ok(());
        };
        let mut obj = obj;
        obj["status"] = json!({"phase": "Terminating"});
        release(tx, ns_key, obj, NAMESPACE_FINALIZER)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{eventually, opts, store, vm, VM, VMI};
    use crate::store::ListOptions;

    /// Creates a VM and `n` VMIs it owns; returns the VM's uid.
    async fn family(s: &Objects, owner: &str, n: usize, block: bool) -> String {
        let vm = s
            .create(&VM, Some("default"), vm(owner), &opts())
            .await
            .expect("owner")
            .object;
        let uid = vm["metadata"]["uid"].as_str().expect("uid").to_string();
        for i in 0..n {
            let child = json!({"metadata": {"name": format!("{owner}-{i}"), "ownerReferences": [{
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": owner,
                "uid": uid, "controller": true, "blockOwnerDeletion": block}]}, "spec": {}});
            s.create(&VMI, Some("default"), child, &opts())
                .await
                .expect("dependent");
        }
        uid
    }

    fn count(s: &Objects) -> usize {
        s.list(&VMI, None, &ListOptions::default())
            .expect("list")
            .items
            .len()
    }

    #[tokio::test]
    async fn background_deletes_dependents_after_the_owner() {
        let (s, _dir) = store();
        family(&s, "a", 3, false).await;
        // A dependent with a second, live owner only loses the dead reference.
        let other = s
            .create(&VM, Some("default"), vm("b"), &opts())
            .await
            .expect("b")
            .object;
        let a_uid = s.get(&VM, Some("default"), "a").expect("a")["metadata"]["uid"].clone();
        let shared = json!({"metadata": {"name": "shared", "ownerReferences": [
            {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": "a", "uid": a_uid},
            {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": "b", "uid": other["metadata"]["uid"]}]},
            "spec": {}});
        s.create(&VMI, Some("default"), shared, &opts())
            .await
            .expect("shared");
        let d = s
            .delete(&VM, Some("default"), "a", &DeleteOptions::default())
            .await
            .expect("delete");
        assert!(d.removed, "background removes the owner at once");
        // The collector deletes the sole dependents and patches the shared one in
        // separate steps: wait for both, in whichever order they land.
        let refs = |s: &Objects| {
            s.get(&VMI, Some("default"), "shared").expect("shared kept")["metadata"]
                ["ownerReferences"]
                .as_array()
                .expect("refs")
                .clone()
        };
        eventually(
            "dependents collected and the dead reference dropped",
            || count(&s) == 1 && refs(&s).len() == 1,
        )
        .await;
        assert_eq!(refs(&s)[0]["name"], "b");
    }

    #[tokio::test]
    async fn foreground_deletes_the_owner_after_blocking_dependents() {
        let (s, _dir) = store();
        family(&s, "a", 2, true).await;
        // One dependent is held by a finalizer: the owner must wait for it.
        s.patch(
            &VMI,
            Some("default"),
            "a-0",
            crate::store::Patch::Merge(json!({"metadata": {"finalizers": ["example.com/hold"]}})),
            &opts(),
        )
        .await
        .expect("hold");
        let opts_fg = DeleteOptions {
            propagation: Some(Propagation::Foreground),
            ..Default::default()
        };
        let d = s
            .delete(&VM, Some("default"), "a", &opts_fg)
            .await
            .expect("delete");
        assert!(!d.removed);
        assert_eq!(d.object["metadata"]["finalizers"], json!([FOREGROUND]));
        eventually("unheld dependent deleted", || {
            s.get(&VMI, Some("default"), "a-1").is_err()
                && s.get(&VMI, Some("default"), "a-0")
                    .is_ok_and(|o| meta::is_deleting(&o))
        })
        .await;
        assert!(
            s.get(&VM, Some("default"), "a").is_ok(),
            "owner waits for its blocking dependent"
        );
        s.patch(
            &VMI,
            Some("default"),
            "a-0",
            crate::store::Patch::Merge(json!({"metadata": {"finalizers": null}})),
            &opts(),
        )
        .await
        .expect("release");
        eventually("owner deleted", || {
            s.get(&VM, Some("default"), "a").is_err()
        })
        .await;
        assert_eq!(count(&s), 0);
    }

    #[tokio::test]
    async fn orphan_keeps_dependents_without_references() {
        let (s, _dir) = store();
        family(&s, "a", 2, true).await;
        let opts_orphan = DeleteOptions {
            propagation: Some(Propagation::Orphan),
            ..Default::default()
        };
        s.delete(&VM, Some("default"), "a", &opts_orphan)
            .await
            .expect("delete");
        eventually("owner deleted", || {
            s.get(&VM, Some("default"), "a").is_err()
        })
        .await;
        let items = s
            .list(&VMI, None, &ListOptions::default())
            .expect("list")
            .items;
        assert_eq!(items.len(), 2);
        assert!(items
            .iter()
            .all(|o| o["metadata"].get("ownerReferences").is_none()));
    }

    #[tokio::test]
    async fn collection_resumes_after_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = Objects::open(dir.path()).expect("open");
            family(&s, "a", 3, false).await;
            // Remove the owner behind the collector's back, as if the process had
            // crashed between the owner's removal and the collection.
            let key = Key::decode("/kubevirt.io/virtualmachines/default/a").expect("key");
            let ((), ack) = s
                .write(false, |tx| {
                    let o = tx.read(&key)?.expect("owner");
                    tx.remove(&key, o).map(|_| ())
                })
                .expect("remove");
            ack.expect("ack").wait().await.expect("durable");
            drop(s);
        }
        let s = Objects::open(dir.path()).expect("reopen");
        eventually("dependents collected after restart", || count(&s) == 0).await;
    }
}
