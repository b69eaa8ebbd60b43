//! The store: durable API objects with a global revision and a watch log.
//!
//! Two layers:
//! - a key-value [`Backend`] trait (sled by default; etcd later) holding
//!   `/{group}/{resource}/{namespace}/{name}` → JSON (core group as `core`, no namespace
//!   segment for cluster-scoped kinds), a global monotonic revision and a watch log of
//!   `(revision, type, object)`, each write in one atomic batch, acknowledged only once
//!   durable (group commit: concurrent writers share one flush);
//! - [`Objects`], the generic registry over it (Kubernetes' `registry/generic` role):
//!   server-set metadata, defaulting and validation from `api::resource`, the status
//!   subresource, patches, finalizers and `deletionTimestamp`, garbage collection by
//!   ownerReferences, selectors, pagination and watches. The apiserver and the
//!   in-process client both go through [`Objects`], so both paths validate alike.
//!
//! Every [`Objects`] operation fails with an [`api::status::ApiError`] that the HTTP layer
//! renders as a `Status` as it is; nothing is written when an operation fails.
//!
//! Files: `backend.rs` (the trait), `sled.rs` (its sled implementation and on-disk
//! layout), `commit.rs` (group commit), `objects.rs` (the registry), `key.rs`,
//! `metadata.rs`, `selector.rs`, `patch.rs`, `watch.rs`, `gc.rs` (garbage collector and
//! namespace finalizer), `migrate.rs` (export/import as JSON lines).
//!
//! Guarantees and known gaps:
//! - A write returns only once durable; watchers only ever see durable events, in
//!   revision order, each exactly once. Reads (get, list) may show a write whose flush is
//!   still in flight, and a crash at that moment loses that write (its writer got no
//!   answer); level-triggered clients converge on their next list.
//! - Pages after the first (`continue`) are read at the current state from the token's
//!   key on, and carry the first page's revision (410 once that revision is compacted);
//!   they are not a snapshot at that revision.
//! - Watches with selectors send the events of objects that match after the change
//!   (DELETED: before it); an object that stops matching sends no synthetic DELETED.
//! - Server-side apply is a create-or-merge-patch: no `managedFields`, no conflicts, no
//!   pruning of fields dropped from a manifest.
//!
//! ```no_run
//! # async fn demo(def: &api::resource::ResourceDef) -> Result<(), Box<dyn std::error::Error>> {
//! use monovirt::store::{Objects, WriteOptions, ListOptions};
//! let objects = Objects::open(std::path::Path::new("/var/lib/monovirt/store"))?;
//! let vm = serde_json::json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
//!     "metadata": {"name": "vm1"}, "spec": {}});
//! let written = objects.create(def, Some("default"), vm, &WriteOptions::default()).await?;
//! let list = objects.list(def, Some("default"), &ListOptions::default())?;
//! let mut events = objects.watch(def, Some("default"), &ListOptions::default())?;
//! while let Some(event) = events.recv().await { println!("{}", event.to_json()); }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
// `ApiError` (160 bytes) is the API machinery's one error type, rendered as a `Status` by
// the HTTP layer as it is; the store returns it unboxed, like the apiserver does.
#![allow(clippy::result_large_err)]

mod backend;
mod commit;
mod gc;
mod key;
mod metadata;
mod migrate;
mod objects;
mod options;
pub mod patch;
pub mod selector;
mod sled;
#[cfg(test)]
mod testing;
mod watch;

pub use self::sled::{SledBackend, FORMAT_VERSION};
pub use backend::{Backend, BackendError, EventType, LogEntry, Op, Txn};

pub use migrate::MigrateError;
pub use objects::{Objects, StoreConfig, StoreError};
pub use options::{
    DeleteOptions, Deleted, FieldValidation, ListOptions, ObjectList, Patch, Propagation,
    Subresource, WatchEvent, WatchEventType, WriteOptions, Written,
};
