//! [`Objects`]: the generic registry over the store backend.

use super::options::{
    DeleteOptions, Deleted, ListOptions, ObjectList, Patch, WatchEvent, WriteOptions, Written,
};
use api::resource::ResourceDef;
use api::status::ApiError;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Errors opening a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Store backend failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("Store format version {found} is not supported (expected {expected})")]
    Format { found: String, expected: String },
}

/// Tuning of a store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// How many revisions of watch log to keep; older watch starts get 410 Expired.
    pub log_retention: u64,
    /// How often a watch with `allow_bookmarks` sends a BOOKMARK when idle.
    pub bookmark_interval: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            log_retention: 10_000,
            bookmark_interval: Duration::from_secs(60),
        }
    }
}

/// The generic registry: every API object read and write goes through it. Cheap to clone.
#[derive(Clone)]
pub struct Objects {
    inner: Arc<()>,
}

impl Objects {
    /// Opens (or creates) the store in `dir`; creates the `default` namespace if absent.
    pub fn open(dir: &Path) -> Result<Objects, StoreError> {
        Self::open_with(dir, StoreConfig::default())
    }

    /// [`Objects::open`] with explicit tuning.
    pub fn open_with(_dir: &Path, _config: StoreConfig) -> Result<Objects, StoreError> {
        Ok(Objects {
            inner: Arc::new(()),
        })
    }

    /// A store in a temporary directory removed on drop, for tests.
    pub fn in_memory() -> Result<Objects, StoreError> {
        Ok(Objects {
            inner: Arc::new(()),
        })
    }

    /// Creates an object (201). `ns` is required for namespaced kinds.
    pub async fn create(
        &self,
        _def: &ResourceDef,
        _ns: Option<&str>,
        _obj: Value,
        _opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        Err(ApiError::internal("The store is being written"))
    }

    /// Reads one object.
    pub fn get(&self, def: &ResourceDef, _ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
        Err(ApiError::not_found(def.group, def.plural, name))
    }

    /// Lists objects (all namespaces when `ns` is `None` for a namespaced kind).
    pub fn list(
        &self,
        _def: &ResourceDef,
        _ns: Option<&str>,
        _opts: &ListOptions,
    ) -> Result<ObjectList, ApiError> {
        Err(ApiError::internal("The store is being written"))
    }

    /// Replaces an object (PUT), with the resourceVersion in the body as precondition.
    pub async fn update(
        &self,
        _def: &ResourceDef,
        _ns: Option<&str>,
        _name: &str,
        _obj: Value,
        _opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        Err(ApiError::internal("The store is being written"))
    }

    /// Patches an object; [`Patch::Apply`] creates it when absent (`created` is then true).
    pub async fn patch(
        &self,
        _def: &ResourceDef,
        _ns: Option<&str>,
        _name: &str,
        _patch: Patch,
        _opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        Err(ApiError::internal("The store is being written"))
    }

    /// Deletes an object, honouring finalizers and the propagation policy.
    pub async fn delete(
        &self,
        _def: &ResourceDef,
        _ns: Option<&str>,
        _name: &str,
        _opts: &DeleteOptions,
    ) -> Result<Deleted, ApiError> {
        Err(ApiError::internal("The store is being written"))
    }

    /// Watches a resource. Must be called within a tokio runtime (it spawns the stream's
    /// task). The stream ends when the receiver is dropped.
    pub fn watch(
        &self,
        _def: &ResourceDef,
        _ns: Option<&str>,
        _opts: &ListOptions,
    ) -> Result<tokio::sync::mpsc::Receiver<WatchEvent>, ApiError> {
        Err(ApiError::internal("The store is being written"))
    }

    /// The latest revision written.
    pub fn revision(&self) -> u64 {
        let _ = &self.inner;
        0
    }
}
