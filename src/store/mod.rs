//! The store: durable API objects with a global revision and a watch log.
//!
//! Two layers:
//! - a key-value [`Backend`] trait (sled by default; etcd later) holding
//!   `/{group}/{resource}/{namespace}/{name}` → JSON, a global monotonic revision and a
//!   watch log of `(revision, type, object)`, each write in one transaction, acknowledged
//!   only once durable (group commit);
//! - [`Objects`], the generic registry over it (Kubernetes' `registry/generic` role):
//!   server-set metadata, defaulting and validation from `api::resource`, the status
//!   subresource, patches, finalizers and `deletionTimestamp`, garbage collection by
//!   ownerReferences, selectors, pagination and watches. The apiserver and the
//!   in-process client both go through [`Objects`], so both paths validate alike.
//!
//! CONTRACT (written before the implementation; the apiserver is built against it):
//!
//! ```ignore
//! pub struct Objects { /* Arc inside; Clone */ }
//! impl Objects {
//!     pub fn open(dir: &Path) -> Result<Objects, StoreError>;      // sled under dir
//!     pub fn in_memory() -> Result<Objects, StoreError>;           // sled temporary, for tests
//!     pub async fn create(&self, def: &ResourceDef, ns: Option<&str>, obj: Value, opts: &WriteOptions) -> Result<Value, ApiError>;
//!     pub fn get(&self, def: &ResourceDef, ns: Option<&str>, name: &str) -> Result<Value, ApiError>;
//!     pub fn list(&self, def: &ResourceDef, ns: Option<&str>, opts: &ListOptions) -> Result<ObjectList, ApiError>;
//!     pub async fn update(&self, def: &ResourceDef, ns: Option<&str>, name: &str, obj: Value, opts: &WriteOptions) -> Result<Value, ApiError>;
//!     pub async fn patch(&self, def: &ResourceDef, ns: Option<&str>, name: &str, patch: Patch, opts: &WriteOptions) -> Result<(Value, bool /*created*/), ApiError>;
//!     pub async fn delete(&self, def: &ResourceDef, ns: Option<&str>, name: &str, opts: &DeleteOptions) -> Result<Value, ApiError>;
//!     pub fn watch(&self, def: &ResourceDef, ns: Option<&str>, opts: &ListOptions) -> Result<tokio::sync::mpsc::Receiver<WatchEvent>, ApiError>;
//!     pub fn revision(&self) -> u64;
//! }
//! pub struct WriteOptions { pub subresource: Option<Subresource /*Status*/>, pub field_validation: FieldValidation /*Strict|Warn|Ignore*/, pub dry_run: bool, pub field_manager: Option<String> }
//!   // update/patch/create return warnings through ApiError? no: Warn collects into
//!   // WriteOutcome; see `Written { object, warnings }` if needed by the implementation.
//! pub enum Patch { Merge(Value), Json(Value), Apply(Value) }
//! pub struct DeleteOptions { pub propagation: Propagation /*Background|Foreground|Orphan*/, pub grace_period_seconds: Option<i64>, pub preconditions_rv: Option<String>, pub preconditions_uid: Option<String> }
//! pub struct ListOptions { pub label_selector: Option<String>, pub field_selector: Option<String>, pub limit: Option<usize>, pub continue_token: Option<String>, pub resource_version: Option<String>, pub allow_bookmarks: bool }
//! pub struct ObjectList { pub items: Vec<Value>, pub resource_version: u64, pub continue_token: Option<String>, pub remaining: Option<u64> }
//! pub struct WatchEvent { pub type_: WatchEventType /*Added|Modified|Deleted|Bookmark|Error*/, pub object: Value }
//! ```
