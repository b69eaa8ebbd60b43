//! The request and result types of [`Objects`](super::Objects): what a caller (the
//! apiserver, the in-process client) passes in and gets back. They mirror the query
//! parameters and bodies of the Kubernetes REST API (`CreateOptions`, `ListOptions`,
//! `DeleteOptions`, `WatchEvent`).

use serde_json::Value;

/// The subresource a write addresses. The main resource is `None` in [`WriteOptions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    /// `/status`: only `.status` changes; everything else is kept as stored.
    Status,
}

/// `?fieldValidation=`: what to do with fields the schema does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// 400 BadRequest `strict decoding error: unknown field "spec.foo"`.
    Strict,
    /// Drop them and report one warning each (the Kubernetes default).
    #[default]
    Warn,
    /// Drop them silently.
    Ignore,
}

impl FieldValidation {
    /// Parses the query parameter (`Strict`, `Warn`, `Ignore`; empty means `Warn`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Strict" => Some(Self::Strict),
            "Warn" | "" => Some(Self::Warn),
            "Ignore" => Some(Self::Ignore),
            _ => None,
        }
    }
}

/// Options of create, update and patch (`CreateOptions` / `UpdateOptions` / `PatchOptions`).
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// `Some(Status)` for writes to `/status`.
    pub subresource: Option<Subresource>,
    pub field_validation: FieldValidation,
    /// `?dryRun=All`: run every check, persist nothing, return what would be stored.
    pub dry_run: bool,
    /// `?fieldManager=`. Recorded for server-side apply; not otherwise interpreted.
    pub field_manager: Option<String>,
    /// `?force=true` of server-side apply.
    pub force: bool,
}

/// A patch body, by its Content-Type.
#[derive(Debug, Clone)]
pub enum Patch {
    /// `application/merge-patch+json` (RFC 7386).
    Merge(Value),
    /// `application/json-patch+json` (RFC 6902): an array of operations.
    Json(Value),
    /// `application/apply-patch+yaml` (server-side apply; the caller decodes the YAML or
    /// JSON body into a value). Creates the object when absent.
    Apply(Value),
    /// `application/strategic-merge-patch+json`. Built-in kinds only (a merge patch whose
    /// lists of named items merge by `name`); custom resources answer 415.
    Strategic(Value),
}

/// `propagationPolicy` of a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Propagation {
    /// Delete the owner now; the garbage collector deletes dependents afterwards.
    #[default]
    Background,
    /// Mark the owner (`foregroundDeletion` finalizer), delete dependents, then the owner.
    Foreground,
    /// Delete the owner; remove the ownerReferences of its dependents (`orphan` finalizer).
    Orphan,
}

impl Propagation {
    /// Parses `Background`, `Foreground` or `Orphan`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Background" => Some(Self::Background),
            "Foreground" => Some(Self::Foreground),
            "Orphan" => Some(Self::Orphan),
            _ => None,
        }
    }
}

/// `DeleteOptions`.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// `None` means the default, Background.
    pub propagation: Option<Propagation>,
    /// Recorded as `metadata.deletionGracePeriodSeconds` when finalizers keep the object.
    pub grace_period_seconds: Option<i64>,
    /// `preconditions.resourceVersion`: 409 Conflict when the stored one differs.
    pub preconditions_rv: Option<String>,
    /// `preconditions.uid`: 409 Conflict when the stored uid differs.
    pub preconditions_uid: Option<String>,
    /// `?dryRun=All`.
    pub dry_run: bool,
}

/// `ListOptions` of list and watch.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// `labelSelector`: `a=b,c!=d,e in (f,g),h notin (i),j,!k`.
    pub label_selector: Option<String>,
    /// `fieldSelector`: `metadata.name=x,status.phase!=Running`.
    pub field_selector: Option<String>,
    /// Page size; `None` or `Some(0)` lists everything.
    pub limit: Option<usize>,
    /// The `metadata.continue` of the previous page.
    pub continue_token: Option<String>,
    /// List: must be numeric if set (the store always serves its latest state).
    /// Watch: unset or `"0"` starts with a synthetic ADDED per current object; `N` sends
    /// every change after revision N (410 Expired once N is compacted).
    pub resource_version: Option<String>,
    /// Watch: send BOOKMARK events.
    pub allow_bookmarks: bool,
}

/// A page of a list.
#[derive(Debug, Clone)]
pub struct ObjectList {
    pub items: Vec<Value>,
    /// The store revision the list was read at (`ListMeta.resourceVersion`).
    pub resource_version: u64,
    /// `ListMeta.continue`: set when more items follow.
    pub continue_token: Option<String>,
    /// `ListMeta.remainingItemCount`: known only for lists without selectors.
    pub remaining: Option<u64>,
}

/// The result of create, update and patch.
#[derive(Debug, Clone)]
pub struct Written {
    /// The object as stored (or as it would be, for dry runs).
    pub object: Value,
    /// True when the write created the object (201 rather than 200).
    pub created: bool,
    /// Warnings for the `Warning: 299 - "..."` header (unknown fields under `Warn`).
    pub warnings: Vec<String>,
}

/// The result of delete.
#[derive(Debug, Clone)]
pub struct Deleted {
    /// The last state of the object (with `deletionTimestamp` when it is kept).
    pub object: Value,
    /// True when the object is gone; false while finalizers keep it (202 Accepted).
    pub removed: bool,
}

/// The type of a [`WatchEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEventType {
    Added,
    Modified,
    Deleted,
    Bookmark,
    Error,
}

impl WatchEventType {
    /// `ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK` or `ERROR`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
            Self::Bookmark => "BOOKMARK",
            Self::Error => "ERROR",
        }
    }
}

/// One event of a watch stream. For `Error` the object is a `Status`.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    pub type_: WatchEventType,
    pub object: Value,
}

impl WatchEvent {
    /// The wire form `{"type":"ADDED","object":{...}}`.
    pub fn to_json(&self) -> Value {
        serde_json::json!({"type": self.type_.as_str(), "object": self.object})
    }
}
