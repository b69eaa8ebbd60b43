//! A reflector (kube-runtime's `reflector`): keeps an in-memory [`Cache`] of one resource in
//! step with the API by list-then-watch, and reports each change. Roles read from the cache
//! and write through the API.

use crate::client::{Api, Event};
use crate::store::ListOptions;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// How long to wait before listing again after a failed list or watch.
const RETRY: Duration = Duration::from_secs(1);

/// The cache key of an object: `namespace/name`, or `name` when cluster-scoped.
pub fn key_of(obj: &Value) -> String {
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    match obj["metadata"]["namespace"].as_str() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name.to_string(),
    }
}

/// The numeric resourceVersion in `meta` (this store's versions are integers), for
/// [`Cache::insert_written`].
pub fn resource_version(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<u64> {
    meta.resource_version.as_deref()?.parse().ok()
}

/// Objects by key, shared between the reflector that fills it and its readers.
#[derive(Debug)]
pub struct Cache<K> {
    inner: Arc<RwLock<BTreeMap<String, Arc<K>>>>,
    /// True once a reflector has filled the cache from a complete list.
    synced: Arc<watch::Sender<bool>>,
}

impl<K> Clone for Cache<K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            synced: self.synced.clone(),
        }
    }
}

impl<K> Default for Cache<K> {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            synced: Arc::new(watch::channel(false).0),
        }
    }
}

impl<K> Cache<K> {
    /// The object with `key`, if cached.
    pub fn get(&self, key: &str) -> Option<Arc<K>> {
        self.read().get(key).cloned()
    }

    /// Every cached object, by key order.
    pub fn list(&self) -> Vec<Arc<K>> {
        self.read().values().cloned().collect()
    }

    /// Puts `obj` under `key` (tests and writers that know the new state first).
    pub fn insert(&self, key: String, obj: K) {
        self.write().insert(key, Arc::new(obj));
    }

    /// Puts a writer's own result `obj` under `key`, unless the cache already holds a later
    /// version of it (by `version`, the numeric resourceVersion): the watch may have brought
    /// a later state while the write's answer was on its way, and no further event would
    /// correct the cache if the writer's older copy replaced it (every write based on it
    /// would then conflict).
    pub fn insert_written(&self, key: String, obj: K, version: impl Fn(&K) -> Option<u64>) {
        let mut map = self.write();
        let cached = map.get(&key).and_then(|c| version(c));
        if cached.is_some_and(|cached| version(&obj).is_some_and(|new| cached > new)) {
            return;
        }
        map.insert(key, Arc::new(obj));
    }

    /// Removes `key`.
    pub fn remove(&self, key: &str) -> Option<Arc<K>> {
        self.write().remove(key)
    }

    /// Waits until a reflector has filled the cache from a complete list: before that, a
    /// missing object may only be not yet listed, not deleted.
    pub async fn synced(&self) {
        let mut rx = self.synced.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|synced| *synced).await;
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<K>>> {
        // A poisoned lock only means a reader panicked; the map itself is always whole.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<K>>> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// One change seen by a reflector: the object's key and its new (or, when deleted, last)
/// state.
#[derive(Debug, Clone)]
pub struct Change<K> {
    pub key: String,
    pub object: Arc<K>,
    pub deleted: bool,
}

fn decode<K: DeserializeOwned>(v: Value) -> Option<K> {
    match serde_json::from_value(v) {
        Ok(k) => Some(k),
        Err(e) => {
            tracing::warn!("skipping an object that does not decode: {e}");
            None
        }
    }
}

/// Fills `cache` from `api` until `shutdown`, sending every change on `changes`. Lists
/// first (replacing the cache wholesale and reporting objects that vanished meanwhile), then
/// watches from the list's resourceVersion; relists when the watch ends or expires.
pub async fn reflect<K: DeserializeOwned + Send + Sync + 'static>(
    api: Api<Value>,
    cache: Cache<K>,
    changes: mpsc::UnboundedSender<Change<K>>,
    shutdown: CancellationToken,
) {
    reflect_with(api, ListOptions::default(), cache, changes, shutdown).await;
}

/// [`reflect`] over the objects `selection`'s label and field selectors choose (a node
/// agent watches only the VMIs bound to its node).
pub async fn reflect_with<K: DeserializeOwned + Send + Sync + 'static>(
    api: Api<Value>,
    selection: ListOptions,
    cache: Cache<K>,
    changes: mpsc::UnboundedSender<Change<K>>,
    shutdown: CancellationToken,
) {
    let selected = || ListOptions {
        label_selector: selection.label_selector.clone(),
        field_selector: selection.field_selector.clone(),
        ..ListOptions::default()
    };
    while !shutdown.is_cancelled() {
        let list = match api.list(&selected()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(resource = api.resource().plural, "list failed: {e}");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(RETRY) => continue,
                }
            }
        };
        let mut fresh = BTreeMap::new();
        for item in list.items {
            let key = key_of(&item);
            if let Some(k) = decode::<K>(item) {
                fresh.insert(key, Arc::new(k));
            }
        }
        let old = std::mem::replace(&mut *cache.write(), fresh.clone());
        cache.synced.send_replace(true);
        for (key, object) in old {
            if !fresh.contains_key(&key) {
                let _ = changes.send(Change {
                    key,
                    object,
                    deleted: true,
                });
            }
        }
        for (key, object) in fresh {
            let _ = changes.send(Change {
                key,
                object,
                deleted: false,
            });
        }
        let opts = ListOptions {
            resource_version: Some(list.resource_version),
            ..selected()
        };
        let mut stream = match api.watch(&opts).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(resource = api.resource().plural, "watch failed: {e}");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(RETRY) => continue,
                }
            }
        };
        loop {
            let event = tokio::select! {
                () = shutdown.cancelled() => return,
                e = stream.next() => e,
            };
            let (obj, deleted) = match event {
                Some(Ok(Event::Added(o) | Event::Modified(o))) => (o, false),
                Some(Ok(Event::Deleted(o))) => (o, true),
                Some(Ok(Event::Bookmark { .. })) => continue,
                Some(Ok(Event::Error(e))) => {
                    tracing::debug!(resource = api.resource().plural, "watch ended: {e}");
                    break;
                }
                Some(Err(e)) => {
                    tracing::warn!(resource = api.resource().plural, "watch failed: {e}");
                    break;
                }
                None => break,
            };
            let key = key_of(&obj);
            let Some(k) = decode::<K>(obj) else { continue };
            let object = Arc::new(k);
            if deleted {
                cache.remove(&key);
            } else {
                cache.write().insert(key.clone(), object.clone());
            }
            if changes
                .send(Change {
                    key,
                    object,
                    deleted,
                })
                .is_err()
            {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Cache;

    #[test]
    fn a_writers_older_copy_never_replaces_a_later_cached_version() {
        let cache: Cache<u64> = Cache::default();
        let version = |v: &u64| Some(*v);
        cache.insert_written("a".into(), 3, version);
        assert_eq!(
            cache.get("a").as_deref(),
            Some(&3),
            "an empty slot takes it"
        );
        // The watch brought version 5 before the writer's answer (version 4) arrived.
        cache.insert("a".into(), 5);
        cache.insert_written("a".into(), 4, version);
        assert_eq!(cache.get("a").as_deref(), Some(&5));
        cache.insert_written("a".into(), 6, version);
        assert_eq!(cache.get("a").as_deref(), Some(&6));
        // Without versions to compare, the writer's copy is taken.
        cache.insert_written("a".into(), 1, |_| None);
        assert_eq!(cache.get("a").as_deref(), Some(&1));
    }
}
