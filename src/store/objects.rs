//! [`Objects`]: the generic registry over a [`Backend`] — Kubernetes' `registry/generic`
//! store semantics for every resource in `api::resource`.
//!
//! Every write runs as one closure over a [`Tx`] under a single write lock: it reads the
//! current state, checks preconditions, and stages puts and deletes (each with its own
//! revision and watch-log entry, plus index updates). If the closure fails nothing is
//! written; if it succeeds the whole transaction is applied in one atomic backend batch
//! and the caller waits for the group committer's durable acknowledgement.

use super::backend::{Backend, BackendError, EventType, LogEntry, Op, Txn};
use super::commit::{Ack, Committer};
use super::gc::{self, GcSignal};
use super::key::{self, index, Key};
use super::metadata as meta;
use super::options::{
    DeleteOptions, Deleted, FieldValidation, ListOptions, ObjectList, Patch, Propagation,
    Subresource, WatchEvent, WriteOptions, Written,
};
use super::patch::{self as patching, PatchError};
use super::selector::{FieldSelector, LabelSelector};
use super::sled::SledBackend;
use super::watch::{self, Event, Filter, Hub, Start};
use api::resource::ResourceDef;
use api::status::{ApiError, Cause};
use base64::Engine as _;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{mpsc, Arc, PoisonError, RwLock};
use std::time::Duration;

/// Errors opening a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Store backend failed")]
    Backend(#[from] BackendError),
    #[error("Creating the default namespace failed: {0}")]
    Init(ApiError),
}

/// Tuning of a store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// How many revisions of watch log to keep; older watch starts get 410 Expired.
    pub log_retention: u64,
    /// How often a watch with `allow_bookmarks` sends a BOOKMARK.
    pub bookmark_interval: Duration,
    /// How often the garbage collector sweeps everything (it also runs on every delete).
    pub gc_interval: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            log_retention: 10_000,
            bookmark_interval: Duration::from_secs(60),
            gc_interval: Duration::from_secs(30),
        }
    }
}

pub(crate) struct Inner {
    pub backend: Arc<dyn Backend>,
    /// The last committed revision; held for writing by writers, for reading by lists.
    lock: RwLock<u64>,
    hub: Arc<Hub>,
    gc: mpsc::Sender<GcSignal>,
    pub config: StoreConfig,
    // Dropped last: joins the committer after every other handle is gone.
    committer: Committer,
}

/// The generic registry: every API object read and write goes through it. Cheap to clone;
/// the store closes (after a final flush) when the last clone and watch are dropped.
#[derive(Clone)]
pub struct Objects {
    pub(crate) inner: Arc<Inner>,
    /// `None` only in the collector's own handle, so the collector never waits for itself.
    #[allow(dead_code)] // Held for its Drop.
    pub(crate) life: Option<Arc<Life>>,
}

/// Dropped with the last user handle: stops the collector and waits for it, so the
/// backend closes (and a reopen in the same process finds it unlocked) once the last
/// handle and watch are gone.
pub(crate) struct Life {
    gc: mpsc::Sender<GcSignal>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Life {
    fn drop(&mut self) {
        let _ = self.gc.send(GcSignal::Shutdown);
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "store backend error");
    ApiError::internal("The store failed to process the request")
}

fn forbidden(message: String) -> ApiError {
    ApiError::new(403, "Forbidden", message)
}

fn is_namespace_key(k: &Key) -> bool {
    k.group.is_empty() && k.resource == "namespaces"
}

/// Built-in kinds (core and `*.k8s.io` groups) versus custom resources (KubeVirt's, CDI's…).
fn is_builtin(def: &ResourceDef) -> bool {
    def.group.is_empty() || def.group.ends_with(".k8s.io") || !def.group.contains('.')
}

fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

/// The staged writes of one transaction, readable before they are committed.
pub(crate) struct Tx<'a> {
    backend: &'a dyn Backend,
    revision: u64,
    txn: Txn,
    staged: HashMap<String, Option<Vec<u8>>>,
    events: Vec<Arc<Event>>,
    removed_uids: Vec<String>,
    marked: bool,
}

impl<'a> Tx<'a> {
    fn new(backend: &'a dyn Backend, revision: u64) -> Self {
        Self {
            backend,
            revision,
            txn: Txn::default(),
            staged: HashMap::new(),
            events: Vec::new(),
            removed_uids: Vec::new(),
            marked: false,
        }
    }

    fn raw(&self, k: &str) -> Result<Option<Vec<u8>>, ApiError> {
        match self.staged.get(k) {
            Some(v) => Ok(v.clone()),
            None => self.backend.get(k).map_err(internal),
        }
    }

    fn read_key(&self, k: &str) -> Result<Option<Value>, ApiError> {
        match self.raw(k)? {
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(internal),
            None => Ok(None),
        }
    }

    /// The current state of an object, including this transaction's changes.
    pub fn read(&self, key: &Key) -> Result<Option<Value>, ApiError> {
        self.read_key(&key.encode())
    }

    /// The key of the object with this uid, if it exists.
    pub fn key_of_uid(&self, uid: &str) -> Result<Option<String>, ApiError> {
        Ok(self
            .raw(&index::uid(uid))?
            .and_then(|v| String::from_utf8(v).ok()))
    }

    /// Keys of the objects naming `owner_uid` in their ownerReferences (as committed
    /// before this transaction; callers re-read each one).
    pub fn dependents(&self, owner_uid: &str) -> Result<Vec<String>, ApiError> {
        let prefix = index::owner_prefix(owner_uid);
        let entries = self
            .backend
            .scan(&prefix, None, usize::MAX)
            .map_err(internal)?;
        Ok(entries
            .into_iter()
            .filter_map(|(k, _)| index::split_owner(&k).map(|(_, dep)| dep.to_string()))
            .collect())
    }

    fn op_put(&mut self, k: String, v: Vec<u8>) {
        self.staged.insert(k.clone(), Some(v.clone()));
        self.txn.ops.push(Op::Put(k, v));
    }

    fn op_delete(&mut self, k: String) {
        self.staged.insert(k.clone(), None);
        self.txn.ops.push(Op::Delete(k));
    }

    fn needs_gc(k: &Key, obj: &Value) -> bool {
        meta::is_deleting(obj)
            && (is_namespace_key(k)
                || meta::finalizers(obj)
                    .iter()
                    .any(|f| f == gc::ORPHAN || f == gc::FOREGROUND))
    }

    fn index(&mut self, key: &Key, k: &str, old: Option<&Value>, new: Option<&Value>) {
        match (old.and_then(meta::uid), new.and_then(meta::uid)) {
            (None, Some(uid)) => self.op_put(index::uid(uid), k.as_bytes().to_vec()),
            (Some(uid), None) => {
                self.removed_uids.push(uid.to_string());
                self.op_delete(index::uid(uid));
            }
            _ => {}
        }
        let refs = |o: Option<&Value>| -> BTreeSet<String> {
            o.map(|o| meta::owner_refs(o).into_iter().map(|r| r.uid).collect())
                .unwrap_or_default()
        };
        let (before, after) = (refs(old), refs(new));
        for gone in before.difference(&after) {
            self.op_delete(index::owner(gone, k));
        }
        for added in after.difference(&before) {
            self.op_put(index::owner(added, k), Vec::new());
        }
        let was = old.is_some_and(|o| Self::needs_gc(key, o));
        let is = new.is_some_and(|o| Self::needs_gc(key, o));
        if is {
            self.marked = true;
            if !was {
                self.op_put(index::gc(k), Vec::new());
            }
        } else if was {
            self.op_delete(index::gc(k));
        }
    }

    fn log(&mut self, event: EventType, k: String, obj: Value) -> Result<Value, ApiError> {
        let bytes = serde_json::to_vec(&obj).map_err(internal)?;
        self.txn.log.push(LogEntry {
            revision: self.revision,
            event,
            key: k.clone(),
            object: bytes.clone(),
        });
        if event != EventType::Deleted {
            self.op_put(k.clone(), bytes);
        }
        let object = Arc::new(obj);
        self.events.push(Arc::new(Event {
            revision: self.revision,
            event,
            key: k,
            object: object.clone(),
        }));
        Ok(Arc::unwrap_or_clone(object))
    }

    /// Stores `obj` under `key` at a new revision (its `resourceVersion`) and logs it.
    pub fn put(&mut self, key: &Key, mut obj: Value, event: EventType) -> Result<Value, ApiError> {
        let k = key.encode();
        let old = self.read_key(&k)?;
        self.revision += 1;
        meta::meta_mut(&mut obj).insert("resourceVersion".into(), json!(self.revision.to_string()));
        self.index(key, &k, old.as_ref(), Some(&obj));
        self.log(event, k, obj)
    }

    /// Removes `key`; the DELETED event carries `last` at the deletion's revision.
    pub fn remove(&mut self, key: &Key, mut last: Value) -> Result<Value, ApiError> {
        let k = key.encode();
        let old = self.read_key(&k)?;
        self.revision += 1;
        meta::meta_mut(&mut last)
            .insert("resourceVersion".into(), json!(self.revision.to_string()));
        self.index(key, &k, old.as_ref(), None);
        self.op_delete(k.clone());
        self.log(EventType::Deleted, k, last)
    }

    /// Removes a stale index entry.
    pub fn drop_index(&mut self, k: String) {
        self.op_delete(k);
    }
}

/// Checks `apiVersion` and `kind` against the resource and fills them in.
fn check_type(def: &ResourceDef, obj: &mut Value) -> Result<(), ApiError> {
    let Some(map) = obj.as_object_mut() else {
        return Err(ApiError::bad_request(format!(
            "the body of the request must be a {} object",
            def.kind
        )));
    };
    let expected = def.api_version();
    if let Some(v) = map.get("apiVersion").filter(|v| !v.is_null()) {
        if v.as_str() != Some(expected.as_str()) {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({}) does not match the expected API version ({expected})",
                v.as_str().unwrap_or_default()
            )));
        }
    }
    if let Some(k) = map.get("kind").filter(|v| !v.is_null()) {
        if k.as_str() != Some(def.kind) {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({}) does not match the expected kind ({})",
                k.as_str().unwrap_or_default(),
                def.kind
            )));
        }
    }
    map.insert("apiVersion".into(), json!(expected));
    map.insert("kind".into(), json!(def.kind));
    if !map.get("metadata").is_none_or(Value::is_object) {
        return Err(ApiError::bad_request("metadata must be an object"));
    }
    Ok(())
}

/// Applies `fieldValidation` to unknown fields: 400, warnings, or silence. Unknown fields
/// are dropped in the last two cases.
fn field_validation(
    def: &ResourceDef,
    obj: &mut Value,
    mode: FieldValidation,
) -> Result<Vec<String>, ApiError> {
    let unknown = (def.unknown_fields)(obj);
    if unknown.is_empty() {
        return Ok(Vec::new());
    }
    let messages: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    match mode {
        FieldValidation::Strict => Err(ApiError::bad_request(format!(
            "strict decoding error: {}",
            messages.join(", ")
        ))),
        FieldValidation::Warn | FieldValidation::Ignore => {
            for f in &unknown {
                meta::remove_path(obj, f);
            }
            Ok(if mode == FieldValidation::Warn {
                messages
            } else {
                Vec::new()
            })
        }
    }
}

/// Validates a whole object as admission would: metadata (names, labels, annotations),
/// then the kind's own checks, and on updates the fields that are immutable once set.
fn validate(def: &ResourceDef, obj: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    let mut causes = api::validation::validate_metadata(def, obj);
    causes.extend((def.validate)(obj));
    if let Some(old) = old {
        causes.extend(api::immutability::validate_update(def, old, obj));
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            def.group,
            def.kind,
            meta::name(obj),
            causes,
        ))
    }
}

fn parse_rv(rv: &str) -> Result<u64, ApiError> {
    rv.parse::<u64>().map_err(|_| {
        ApiError::bad_request(format!("invalid resource version: {rv:?} is not a number"))
    })
}

/// Everything a create does before it touches the store: type, names, namespace,
/// unknown fields, defaults, server-set metadata, validation.
fn prepare_create(
    def: &ResourceDef,
    ns: Option<&str>,
    mut obj: Value,
    opts: &WriteOptions,
) -> Result<(Key, Value, Vec<String>), ApiError> {
    check_type(def, &mut obj)?;
    let namespace = if def.namespaced {
        let body_ns = meta::meta_str(&obj, "namespace").filter(|s| !s.is_empty());
        let ns = match (ns, body_ns) {
            (Some(a), Some(b)) if a != b => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ))
            }
            (Some(a), _) => a.to_string(),
            (None, Some(b)) => b.to_string(),
            (None, None) => return Err(ApiError::bad_request("a namespace is required")),
        };
        meta::meta_mut(&mut obj).insert("namespace".into(), json!(ns));
        Some(ns)
    } else {
        meta::meta_mut(&mut obj).remove("namespace");
        None
    };
    let warnings = field_validation(def, &mut obj, opts.field_validation)?;
    let m = meta::meta_mut(&mut obj);
    if meta_name_empty(m) {
        if let Some(prefix) = m.get("generateName").and_then(Value::as_str) {
            let generated = format!("{prefix}{}", meta::name_suffix());
            m.insert("name".into(), json!(generated));
        }
    }
    let name = m
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if name.is_empty() {
        return Err(ApiError::invalid(
            def.group,
            def.kind,
            "",
            vec![Cause::new(
                "FieldValueRequired",
                "metadata.name",
                "name or generateName is required",
            )],
        ));
    }
    let is_ns = def.group.is_empty() && def.plural == "namespaces";
    if let Err(msg) = meta::check_name(&name, is_ns) {
        return Err(ApiError::invalid(
            def.group,
            def.kind,
            &name,
            vec![Cause::invalid(
                "metadata.name",
                format!("Invalid value: \"{name}\": {msg}"),
            )],
        ));
    }
    (def.default)(&mut obj);
    let m = meta::meta_mut(&mut obj);
    for owned in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
    ] {
        m.remove(owned);
    }
    m.insert("uid".into(), json!(meta::new_uid()));
    m.insert("creationTimestamp".into(), json!(meta::now()));
    m.insert("generation".into(), json!(1));
    // Status is the controllers' to write, except that Nodes may be created with theirs
    // (kube's node strategy: a registering node reports its capacity at once).
    let is_node = def.group.is_empty() && def.plural == "nodes";
    if def.has_status && !is_node {
        if let Some(map) = obj.as_object_mut() {
            map.remove("status");
        }
    }
    if is_ns {
        init_namespace(&mut obj, &name);
    }
    validate(def, &obj, None)?;
    let key = Key::new(def, namespace.as_deref(), &name);
    Ok((key, obj, warnings))
}

fn meta_name_empty(m: &serde_json::Map<String, Value>) -> bool {
    m.get("name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
}

/// What the namespace lifecycle owns: the name label, the `kubernetes` finalizer, phase.
fn init_namespace(obj: &mut Value, name: &str) {
    let m = meta::meta_mut(obj);
    if !m.get("labels").is_some_and(Value::is_object) {
        m.insert("labels".into(), json!({}));
    }
    m["labels"]["kubernetes.io/metadata.name"] = json!(name);
    if obj.pointer("/spec/finalizers").is_none() {
        if !obj.get("spec").is_some_and(Value::is_object) {
            obj["spec"] = json!({});
        }
        obj["spec"]["finalizers"] = json!(["kubernetes"]);
    }
    obj["status"] = json!({"phase": "Active"});
}

/// Stores a prepared new object: the namespace must exist and be active, the key free.
fn tx_create(tx: &mut Tx, key: &Key, obj: Value) -> Result<Value, ApiError> {
    if let Some(ns) = &key.namespace {
        let ns_key = Key {
            group: String::new(),
            resource: "namespaces".into(),
            namespace: None,
            name: ns.clone(),
        };
        match tx.read(&ns_key)? {
            None => return Err(ApiError::not_found("", "namespaces", ns)),
            Some(n) if meta::is_deleting(&n) => {
                return Err(forbidden(format!(
                    "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    qualified(&key.group, &key.resource),
                    key.name
                )))
            }
            Some(_) => {}
        }
    }
    if tx.read(key)?.is_some() {
        return Err(ApiError::already_exists(
            &key.group,
            &key.resource,
            &key.name,
        ));
    }
    tx.put(key, obj, EventType::Added)
}

/// How an update treats `resourceVersion`.
#[derive(Clone, Copy)]
enum Precondition {
    /// PUT: the body's RV must match; custom resources require one.
    Put(Option<u64>),
    /// Patch: the patched object's RV (if the patch set one) must match.
    Patch(Option<u64>),
}

/// Replaces the stored object at `key` by `new` (already type-checked and defaulted).
fn tx_update(
    tx: &mut Tx,
    def: &ResourceDef,
    key: &Key,
    mut new: Value,
    pre: Precondition,
    sub: Option<Subresource>,
) -> Result<Value, ApiError> {
    let Some(old) = tx.read(key)? else {
        return Err(ApiError::not_found(&key.group, &key.resource, &key.name));
    };
    let stored_rv = meta::resource_version(&old).map(parse_rv).transpose()?;
    match pre {
        Precondition::Put(None) if !is_builtin(def) && sub.is_none() => {
            return Err(ApiError::invalid(
                def.group,
                def.kind,
                &key.name,
                vec![Cause::invalid(
                    "metadata.resourceVersion",
                    "Invalid value: 0x0: must be specified for an update",
                )],
            ))
        }
        Precondition::Put(Some(rv)) | Precondition::Patch(Some(rv)) if Some(rv) != stored_rv => {
            return Err(ApiError::conflict(&key.group, &key.resource, &key.name))
        }
        _ => {}
    }
    if sub == Some(Subresource::Status) {
        let status = new.get("status").cloned();
        new = old.clone();
        match status {
            Some(s) => new["status"] = s,
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    } else if def.has_status {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    // Metadata the server owns.
    let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let m = meta::meta_mut(&mut new);
    for owned in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "name",
        "namespace",
        "resourceVersion",
    ] {
        match old_meta.get(owned) {
            Some(v) => m.insert(owned.into(), v.clone()),
            None => m.remove(owned),
        };
    }
    if meta::is_deleting(&old) {
        let before: BTreeSet<String> = meta::finalizers(&old).into_iter().collect();
        if meta::finalizers(&new).iter().any(|f| !before.contains(f)) {
            return Err(ApiError::invalid(
                def.group,
                def.kind,
                &key.name,
                vec![Cause::new(
                    "FieldValueForbidden",
                    "metadata.finalizers",
                    "Forbidden: no new finalizers can be added if the object is being deleted",
                )],
            ));
        }
    }
    if meta::spec_part(&new) != meta::spec_part(&old) {
        let generation = meta::generation(&old) + 1;
        meta::meta_mut(&mut new).insert("generation".into(), json!(generation));
    }
    if is_namespace_key(key) {
        if let Some(phase) = old.get("status") {
            new["status"] = phase.clone();
        }
    }
    validate(def, &new, Some(&old))?;
    if new == old {
        // Nothing changed: no new revision, as an etcd-backed apiserver does.
        return Ok(old);
    }
    if meta::is_deleting(&new) && can_remove(key, &new) {
        return tx.remove(key, new);
    }
    tx.put(key, new, EventType::Modified)
}

/// Whether an object being deleted has nothing left holding it.
fn can_remove(key: &Key, obj: &Value) -> bool {
    meta::finalizers(obj).is_empty()
        && !(is_namespace_key(key)
            && obj
                .pointer("/spec/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty()))
}

/// Deletes the object at `key` (finalizers, propagation, preconditions). Shared by the
/// API and the garbage collector.
pub(crate) fn tx_delete(tx: &mut Tx, key: &Key, opts: &DeleteOptions) -> Result<Deleted, ApiError> {
    let Some(old) = tx.read(key)? else {
        return Err(ApiError::not_found(&key.group, &key.resource, &key.name));
    };
    let q = qualified(&key.group, &key.resource);
    if let Some(uid) = &opts.preconditions_uid {
        let stored = meta::uid(&old).unwrap_or("");
        if uid != stored {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {q} \"{}\": Precondition failed: UID in precondition: {uid}, UID in object meta: {stored}",
                    key.name
                ),
            ));
        }
    }
    if let Some(rv) = &opts.preconditions_rv {
        let stored = meta::resource_version(&old).unwrap_or("");
        if rv != stored {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {q} \"{}\": Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {stored}",
                    key.name
                ),
            ));
        }
    }
    if is_namespace_key(key)
        && matches!(key.name.as_str(), "default" | "kube-system" | "kube-public")
    {
        return Err(forbidden(format!(
            "namespaces \"{}\" is forbidden: this namespace may not be deleted",
            key.name
        )));
    }
    let mut finalizers = meta::finalizers(&old);
    let extra = match opts.propagation.unwrap_or_default() {
        Propagation::Background => None,
        Propagation::Foreground => Some(gc::FOREGROUND),
        Propagation::Orphan => Some(gc::ORPHAN),
    };
    if meta::is_deleting(&old) {
        // Already being deleted: a stronger propagation may still be requested.
        if let Some(f) = extra.filter(|f| !finalizers.iter().any(|x| x == f)) {
            let mut new = old.clone();
            finalizers.push(f.to_string());
            meta::set_finalizers(&mut new, &finalizers);
            let object = tx.put(key, new, EventType::Modified)?;
            return Ok(Deleted {
                object,
                removed: false,
            });
        }
        return Ok(Deleted {
            object: old,
            removed: false,
        });
    }
    if let Some(f) = extra {
        if !finalizers.iter().any(|x| x == f) {
            finalizers.push(f.to_string());
        }
    }
    let mut new = old.clone();
    meta::set_finalizers(&mut new, &finalizers);
    if finalizers.is_empty() && !is_namespace_key(key) {
        let object = tx.remove(key, new)?;
        return Ok(Deleted {
            object,
            removed: true,
        });
    }
    // Graceful: mark it and let finalizers (and the collector) finish the job.
    let m = meta::meta_mut(&mut new);
    m.insert("deletionTimestamp".into(), json!(meta::now()));
    m.insert(
        "deletionGracePeriodSeconds".into(),
        json!(opts.grace_period_seconds.unwrap_or(0).max(0)),
    );
    let generation = meta::generation(&old);
    if generation > 0 {
        m.insert("generation".into(), json!(generation + 1));
    }
    if is_namespace_key(key) {
        new["status"] = json!({"phase": "Terminating"});
    }
    let object = tx.put(key, new, EventType::Modified)?;
    Ok(Deleted {
        object,
        removed: false,
    })
}

/// The continue token: kube-apiserver's shape, base64url of `{"v","rv","start"}`.
#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    v: String,
    rv: u64,
    start: String,
}

fn encode_continue(rv: u64, start: &str) -> String {
    let token = ContinueToken {
        v: "meta.k8s.io/v1".into(),
        rv,
        start: start.to_string(),
    };
    let json = serde_json::to_vec(&token).expect("a token serialises");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

fn decode_continue(s: &str, prefix: &str) -> Result<ContinueToken, ApiError> {
    let bad = || {
        ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| bad())?;
    let token: ContinueToken = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if token.v != "meta.k8s.io/v1" || !token.start.starts_with(prefix) {
        return Err(bad());
    }
    Ok(token)
}

fn selectors(
    def: &ResourceDef,
    opts: &ListOptions,
) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(opts.label_selector.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let fields = FieldSelector::parse(opts.field_selector.as_deref().unwrap_or(""), def.kind)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok((labels, fields))
}

/// The collector checks for log compaction every this many revisions.
const COMPACT_EVERY: u64 = 1024;

/// Objects read per backend call when a list scans.
const SCAN_CHUNK: usize = 1000;

impl Objects {
    /// Opens (or creates) the store in `dir`; creates the `default` namespace if absent.
    pub fn open(dir: &Path) -> Result<Objects, StoreError> {
        Self::open_with(dir, StoreConfig::default())
    }

    /// [`Objects::open`] with explicit tuning.
    pub fn open_with(dir: &Path, config: StoreConfig) -> Result<Objects, StoreError> {
        Self::with_backend(Arc::new(SledBackend::open(dir)?), config)
    }

    /// A store in a temporary directory removed on drop, for tests.
    pub fn in_memory() -> Result<Objects, StoreError> {
        Self::with_backend(Arc::new(SledBackend::temporary()?), StoreConfig::default())
    }

    /// A registry over any [`Backend`].
    pub fn with_backend(
        backend: Arc<dyn Backend>,
        config: StoreConfig,
    ) -> Result<Objects, StoreError> {
        let revision = backend.revision()?;
        // Everything a backend has after opening is durable (a crash keeps only that).
        let hub = Arc::new(Hub::new(revision));
        let committer = Committer::start(backend.clone(), hub.clone());
        let (gc_tx, gc_rx) = mpsc::channel();
        let inner = Arc::new(Inner {
            backend,
            lock: RwLock::new(revision),
            hub,
            gc: gc_tx.clone(),
            config,
            committer,
        });
        let thread = gc::start(Arc::downgrade(&inner), gc_rx);
        let life = Life {
            gc: gc_tx,
            thread: std::sync::Mutex::new(Some(thread)),
        };
        let objects = Objects {
            inner,
            life: Some(Arc::new(life)),
        };
        objects.ensure_default_namespace()?;
        let _ = objects.inner.gc.send(GcSignal::Sweep);
        Ok(objects)
    }

    fn ensure_default_namespace(&self) -> Result<(), StoreError> {
        let key = Key {
            group: String::new(),
            resource: "namespaces".into(),
            namespace: None,
            name: "default".into(),
        };
        let (_, ack) = self
            .write(false, |tx| {
                if tx.read(&key)?.is_some() {
                    return Ok(());
                }
                let mut ns = json!({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": "default", "uid": meta::new_uid(),
                                 "creationTimestamp": meta::now()}});
                init_namespace(&mut ns, "default");
                tx_create(tx, &key, ns).map(|_| ())
            })
            .map_err(StoreError::Init)?;
        if let Some(ack) = ack {
            // `open` may run on a tokio worker, where blocking on the ack directly is
            // not allowed; wait on a plain thread.
            std::thread::scope(|s| {
                s.spawn(|| ack.wait_blocking())
                    .join()
                    .unwrap_or_else(|_| Err(ApiError::internal("ack wait panicked")))
            })
            .map_err(StoreError::Init)?;
        }
        Ok(())
    }

    /// Runs `f` as one transaction under the write lock; commits it unless `dry_run`.
    pub(crate) fn write<T>(
        &self,
        dry_run: bool,
        f: impl FnOnce(&mut Tx) -> Result<T, ApiError>,
    ) -> Result<(T, Option<Ack>), ApiError> {
        let mut guard = self
            .inner
            .lock
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let mut tx = Tx::new(&*self.inner.backend, *guard);
        let out = f(&mut tx)?;
        if dry_run || tx.txn.ops.is_empty() {
            return Ok((out, None));
        }
        tx.txn.revision = tx.revision;
        self.inner.backend.commit(&tx.txn).map_err(internal)?;
        let crossed = *guard / COMPACT_EVERY != tx.revision / COMPACT_EVERY;
        *guard = tx.revision;
        let ack = self.inner.committer.submit(std::mem::take(&mut tx.events));
        drop(guard);
        if !tx.removed_uids.is_empty() {
            let _ = self.inner.gc.send(GcSignal::Owners(tx.removed_uids));
        }
        if tx.marked {
            let _ = self.inner.gc.send(GcSignal::Marked);
        }
        if crossed {
            let _ = self.inner.gc.send(GcSignal::Compact);
        }
        Ok((out, Some(ack)))
    }

    async fn finish<T>(&self, (out, ack): (T, Option<Ack>)) -> Result<T, ApiError> {
        if let Some(ack) = ack {
            ack.wait().await?;
        }
        Ok(out)
    }

    fn request_key(def: &ResourceDef, ns: Option<&str>, name: &str) -> Result<Key, ApiError> {
        if def.namespaced && ns.is_none() {
            return Err(ApiError::bad_request("a namespace is required"));
        }
        Ok(Key::new(def, ns, name))
    }

    /// A resourceVersion from the future (another store, or a bug): kube-apiserver's 504
    /// `Too large resource version` rather than silently skipping events up to it.
    fn check_not_future(&self, rv: u64) -> Result<(), ApiError> {
        let current = self.revision();
        if rv > current {
            let mut e = ApiError::new(
                504,
                "Timeout",
                format!("Too large resource version: {rv}, current: {current}"),
            );
            e.details = Some(api::status::Details {
                causes: vec![Cause::new(
                    "ResourceVersionTooLarge",
                    "",
                    "Too large resource version",
                )],
                retry_after_seconds: Some(1),
                ..Default::default()
            });
            return Err(e);
        }
        Ok(())
    }

    /// Creates an object (201). `ns` is required for namespaced kinds (or taken from
    /// `metadata.namespace`); `metadata.generateName` is honoured.
    pub async fn create(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        obj: Value,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let (key, obj, warnings) = prepare_create(def, ns, obj, opts)?;
        let done = self.write(opts.dry_run, |tx| tx_create(tx, &key, obj))?;
        let object = self.finish(done).await?;
        Ok(Written {
            object,
            created: true,
            warnings,
        })
    }

    /// Reads one object.
    pub fn get(&self, def: &ResourceDef, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
        let key = Self::request_key(def, ns, name)?;
        match self.inner.backend.get(&key.encode()).map_err(internal)? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(internal),
            None => Err(ApiError::not_found(def.group, def.plural, name)),
        }
    }

    /// Lists objects (all namespaces when `ns` is `None` for a namespaced kind), in key
    /// order, with selectors and `limit`/`continue` pagination. Every page carries the
    /// revision of the first page.
    pub fn list(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<ObjectList, ApiError> {
        let (labels, fields) = selectors(def, opts)?;
        if let Some(rv) = opts.resource_version.as_deref().filter(|s| !s.is_empty()) {
            self.check_not_future(parse_rv(rv)?)?;
        }
        let prefix = key::prefix(def, ns);
        let token = opts
            .continue_token
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|t| decode_continue(t, &prefix))
            .transpose()?;
        let limit = opts.limit.filter(|l| *l > 0);
        let backend = &*self.inner.backend;
        let guard = self
            .inner
            .lock
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let revision = match &token {
            Some(t) => {
                let compacted = backend.compacted().map_err(internal)?;
                if t.rv < compacted {
                    return Err(ApiError::expired(format!(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter. (too old resource version: {} ({compacted}))",
                        t.rv
                    )));
                }
                t.rv
            }
            None => *guard,
        };
        let keep = |bytes: &[u8]| -> Result<Option<Value>, ApiError> {
            let v: Value = serde_json::from_slice(bytes).map_err(internal)?;
            Ok((labels.matches(&v) && fields.matches(&v)).then_some(v))
        };
        // One name pinned by the field selector (kubectl's delete wait): read one key.
        if let (Some(name), None, true) = (
            fields.pinned_name(),
            &token,
            ns.is_some() || !def.namespaced,
        ) {
            let mut items = Vec::new();
            if let Some(bytes) = backend.get(&format!("{prefix}{name}")).map_err(internal)? {
                items.extend(keep(&bytes)?);
            }
            return Ok(ObjectList {
                items,
                resource_version: revision,
                continue_token: None,
                remaining: None,
            });
        }
        // Under the lock only the raw bytes are read; parsing (the expensive part) waits
        // until after it, unless selectors decide where a page ends.
        let filter_in_scan = limit.is_some() && !(labels.is_empty() && fields.is_empty());
        let mut items = Vec::new();
        let mut raw = Vec::new();
        let mut start = token.map(|t| t.start);
        let mut continue_token = None;
        'scan: loop {
            let chunk = backend
                .scan(&prefix, start.as_deref(), SCAN_CHUNK)
                .map_err(internal)?;
            let done = chunk.len() < SCAN_CHUNK;
            for (k, bytes) in chunk {
                if let Some(limit) = limit {
                    if items.len() + raw.len() >= limit {
                        continue_token =
                            Some(encode_continue(revision, start.as_deref().unwrap_or(&k)));
                        break 'scan;
                    }
                }
                if filter_in_scan {
                    items.extend(keep(&bytes)?);
                } else {
                    raw.push(bytes);
                }
                start = Some(k);
            }
            if done {
                break;
            }
        }
        drop(guard);
        for bytes in raw {
            items.extend(keep(&bytes)?);
        }
        Ok(ObjectList {
            items,
            resource_version: revision,
            continue_token,
            remaining: None,
        })
    }

    /// Replaces an object (PUT), with the resourceVersion in the body as precondition.
    /// With [`Subresource::Status`] only `.status` is taken from the body.
    pub async fn update(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let key = Self::request_key(def, ns, name)?;
        check_type(def, &mut obj)?;
        match meta::meta_str(&obj, "name") {
            Some(n) if !n.is_empty() && n != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )))
            }
            _ => {}
        }
        if def.namespaced {
            if let Some(n) = meta::meta_str(&obj, "namespace").filter(|n| !n.is_empty()) {
                if Some(n) != key.namespace.as_deref() {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
            }
        }
        let rv = meta::resource_version(&obj).map(parse_rv).transpose()?;
        let warnings = field_validation(def, &mut obj, opts.field_validation)?;
        (def.default)(&mut obj);
        let done = self.write(opts.dry_run, |tx| {
            tx_update(tx, def, &key, obj, Precondition::Put(rv), opts.subresource)
        })?;
        let object = self.finish(done).await?;
        Ok(Written {
            object,
            created: false,
            warnings,
        })
    }

    /// Patches an object. [`Patch::Apply`] creates it when absent (`created` is then
    /// true) and otherwise merges like a merge patch (no field ownership is tracked, so
    /// fields dropped from a manifest are not pruned). [`Patch::Strategic`] is refused
    /// with 415 for custom resources, as for CRDs.
    pub async fn patch(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        patch: Patch,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let key = Self::request_key(def, ns, name)?;
        if matches!(patch, Patch::Strategic(_)) && !is_builtin(def) {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
            ));
        }
        let done = self.write(opts.dry_run, |tx| {
            let Some(old) = tx.read(&key)? else {
                if let Patch::Apply(obj) = &patch {
                    let mut obj = obj.clone();
                    if meta::name(&obj).is_empty() && obj.is_object() {
                        meta::meta_mut(&mut obj).insert("name".into(), json!(name));
                    }
                    if meta::name(&obj) != name {
                        return Err(ApiError::bad_request(format!(
                            "the name of the object ({}) does not match the name on the URL ({name})",
                            meta::name(&obj)
                        )));
                    }
                    let (key, obj, warnings) = prepare_create(def, ns, obj, opts)?;
                    let object = tx_create(tx, &key, obj)?;
                    return Ok(Written { object, created: true, warnings });
                }
                return Err(ApiError::not_found(def.group, def.plural, name));
            };
            let mut doc = old.clone();
            let applied = match &patch {
                Patch::Merge(p) | Patch::Apply(p) => patching::merge(&mut doc, p),
                Patch::Json(p) => patching::json(&mut doc, p),
                Patch::Strategic(p) => patching::strategic(&mut doc, p),
            };
            applied.map_err(|e| match e {
                PatchError::Malformed(m) => ApiError::bad_request(m),
                PatchError::Failed(m) => ApiError::new(422, "Invalid", m),
            })?;
            check_type(def, &mut doc)?;
            let rv = match doc.pointer("/metadata/resourceVersion") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.is_empty() => None,
                Some(Value::String(s)) => Some(parse_rv(s)?),
                Some(other) => return Err(ApiError::bad_request(format!(
                    "invalid resource version: {other} is not a number"
                ))),
            };
            let warnings = field_validation(def, &mut doc, opts.field_validation)?;
            (def.default)(&mut doc);
            let object = tx_update(tx, def, &key, doc, Precondition::Patch(rv), opts.subresource)?;
            Ok(Written { object, created: false, warnings })
        })?;
        self.finish(done).await
    }

    /// Deletes an object, honouring preconditions, finalizers and the propagation
    /// policy. `removed` is false while finalizers keep it (with `deletionTimestamp`).
    pub async fn delete(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Deleted, ApiError> {
        let key = Self::request_key(def, ns, name)?;
        let done = self.write(opts.dry_run, |tx| tx_delete(tx, &key, opts))?;
        self.finish(done).await
    }

    /// Watches a resource: for `resource_version` unset or `"0"`, a synthetic ADDED per
    /// current object first; then every change after the start revision, in order.
    /// Must be called within a tokio runtime (it spawns the stream's task); the task ends
    /// when the receiver is dropped.
    pub fn watch(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<tokio::sync::mpsc::Receiver<WatchEvent>, ApiError> {
        let (labels, fields) = selectors(def, opts)?;
        let rv = opts
            .resource_version
            .as_deref()
            .filter(|s| !s.is_empty() && *s != "0");
        let broadcast = self.inner.hub.subscribe();
        let (revision, initial) = match rv {
            None => {
                let list = self.list(
                    def,
                    ns,
                    &ListOptions {
                        label_selector: opts.label_selector.clone(),
                        field_selector: opts.field_selector.clone(),
                        ..ListOptions::default()
                    },
                )?;
                (list.resource_version, list.items)
            }
            Some(rv) => {
                let rv = parse_rv(rv)?;
                self.check_not_future(rv)?;
                let compacted = self.inner.backend.compacted().map_err(internal)?;
                if rv < compacted {
                    return Err(watch::too_old(rv, compacted));
                }
                (rv, Vec::new())
            }
        };
        let filter = Filter {
            prefix: key::prefix(def, ns),
            labels,
            fields,
        };
        let start = Start {
            revision,
            initial,
            bookmarks: opts.allow_bookmarks.then(|| {
                (
                    self.inner.config.bookmark_interval,
                    def.kind,
                    def.api_version(),
                )
            }),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(watch::STREAM_CAPACITY);
        tokio::spawn(watch::run(
            self.inner.backend.clone(),
            self.inner.hub.clone(),
            filter,
            start,
            broadcast,
            tx,
        ));
        Ok(rx)
    }

    /// The latest revision written.
    pub fn revision(&self) -> u64 {
        *self
            .inner
            .lock
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The revision up to which the watch log is compacted.
    pub fn compacted_revision(&self) -> Result<u64, ApiError> {
        self.inner.backend.compacted().map_err(internal)
    }

    /// Compacts the watch log now, keeping the last `log_retention` revisions.
    pub fn compact(&self) -> Result<(), ApiError> {
        let keep = self.inner.config.log_retention;
        let upto = self.inner.hub.durable().saturating_sub(keep);
        if upto > self.compacted_revision()? {
            self.inner.backend.compact(upto).map_err(internal)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{self, eventually, opts, rv, store, vm, NAMESPACE, NODE, PVC, VM};

    #[tokio::test]
    async fn create_fills_server_metadata() {
        let (s, _dir) = store();
        let mut body = vm("vm1");
        body["metadata"]["uid"] = json!("client-uid");
        body["metadata"]["resourceVersion"] = json!("999");
        body["status"] = json!({"ready": true});
        let w = s
            .create(&VM, Some("default"), body, &opts())
            .await
            .expect("create");
        assert!(w.created);
        let o = &w.object;
        assert_eq!(o["metadata"]["namespace"], "default");
        assert_ne!(o["metadata"]["uid"], "client-uid");
        assert_eq!(o["metadata"]["uid"].as_str().expect("uid").len(), 36);
        assert_eq!(o["metadata"]["generation"], 1);
        assert!(o["metadata"]["creationTimestamp"]
            .as_str()
            .expect("ts")
            .ends_with('Z'));
        assert_eq!(rv(o), s.revision());
        assert!(o.get("status").is_none(), "status is dropped on create");
        assert_eq!(o["spec"]["runStrategy"], "Halted", "defaults applied");
        assert_eq!(s.get(&VM, Some("default"), "vm1").expect("get"), w.object);
        let again = s.create(&VM, Some("default"), vm("vm1"), &opts()).await;
        let e = again.expect_err("duplicate");
        assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists"));
        let e = s.get(&VM, Some("default"), "nope").expect_err("missing");
        assert_eq!(e.message, "virtualmachines.kubevirt.io \"nope\" not found");
    }

    #[tokio::test]
    async fn create_rejects_bad_input_and_writes_nothing() {
        let (s, _dir) = store();
        let before = s.revision();
        let e = s
            .create(&VM, Some("missing"), vm("a"), &opts())
            .await
            .expect_err("no ns");
        assert_eq!(
            (e.code, e.message.as_str()),
            (404, "namespaces \"missing\" not found")
        );
        let mut wrong = vm("a");
        wrong["apiVersion"] = json!("kubevirt.io/v2");
        let e = s
            .create(&VM, Some("default"), wrong, &opts())
            .await
            .expect_err("version");
        assert_eq!(e.code, 400);
        let mut wrong = vm("a");
        wrong["kind"] = json!("Pod");
        assert_eq!(
            s.create(&VM, Some("default"), wrong, &opts())
                .await
                .expect_err("kind")
                .code,
            400
        );
        let e = s
            .create(&VM, Some("default"), vm("Bad_Name"), &opts())
            .await
            .expect_err("name");
        assert_eq!(e.code, 422);
        assert_eq!(
            e.details.as_ref().expect("details").causes[0].field,
            "metadata.name"
        );
        let mut invalid = vm("a");
        invalid["spec"]["cpus"] = json!(0);
        let e = s
            .create(&VM, Some("default"), invalid, &opts())
            .await
            .expect_err("invalid");
        assert_eq!(e.code, 422);
        assert_eq!(
            e.details.as_ref().expect("details").causes[0].field,
            "spec.cpus"
        );
        let mut ns_mismatch = vm("a");
        ns_mismatch["metadata"]["namespace"] = json!("other");
        assert_eq!(
            s.create(&VM, Some("default"), ns_mismatch, &opts())
                .await
                .expect_err("ns")
                .code,
            400
        );
        let e = s
            .create(
                &VM,
                Some("default"),
                json!({"metadata": {}, "spec": {}}),
                &opts(),
            )
            .await
            .expect_err("no name");
        assert_eq!(e.code, 422);
        let e = s
            .create(
                &VM,
                Some("default"),
                json!(["not", "an", "object"]),
                &opts(),
            )
            .await
            .expect_err("array");
        assert_eq!(e.code, 400);
        assert_eq!(s.revision(), before, "nothing was written");
        assert!(s
            .list(&VM, None, &ListOptions::default())
            .expect("list")
            .items
            .is_empty());
    }

    #[tokio::test]
    async fn field_validation_modes_and_generate_name_and_dry_run() {
        let (s, _dir) = store();
        let mut body = vm("a");
        body["spec"]["foo"] = json!(1);
        let strict = WriteOptions {
            field_validation: FieldValidation::Strict,
            ..opts()
        };
        let e = s
            .create(&VM, Some("default"), body.clone(), &strict)
            .await
            .expect_err("strict");
        assert_eq!(
            (e.code, e.message.as_str()),
            (400, "strict decoding error: unknown field \"spec.foo\"")
        );
        let w = s
            .create(&VM, Some("default"), body.clone(), &opts())
            .await
            .expect("warn");
        assert_eq!(w.warnings, ["unknown field \"spec.foo\""]);
        assert!(w.object["spec"].get("foo").is_none());
        body["metadata"] = json!({"generateName": "gen-"});
        let ignore = WriteOptions {
            field_validation: FieldValidation::Ignore,
            ..opts()
        };
        let w = s
            .create(&VM, Some("default"), body, &ignore)
            .await
            .expect("generate");
        assert!(w.warnings.is_empty());
        let name = w.object["metadata"]["name"].as_str().expect("name");
        assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
        let rev = s.revision();
        let dry = WriteOptions {
            dry_run: true,
            ..opts()
        };
        let w = s
            .create(&VM, Some("default"), vm("dry"), &dry)
            .await
            .expect("dry run");
        assert_eq!(w.object["metadata"]["name"], "dry");
        assert_eq!(s.revision(), rev);
        assert_eq!(
            s.get(&VM, Some("default"), "dry")
                .expect_err("not stored")
                .code,
            404
        );
    }

    #[tokio::test]
    async fn update_preconditions_generation_and_status() {
        let (s, _dir) = store();
        let created = s
            .create(&VM, Some("default"), vm("vm1"), &opts())
            .await
            .expect("create")
            .object;
        // Stale and malformed resourceVersions.
        let mut stale = created.clone();
        stale["metadata"]["resourceVersion"] = json!("1");
        let e = s
            .update(&VM, Some("default"), "vm1", stale, &opts())
            .await
            .expect_err("stale");
        assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
        let mut bad = created.clone();
        bad["metadata"]["resourceVersion"] = json!("abc");
        assert_eq!(
            s.update(&VM, Some("default"), "vm1", bad, &opts())
                .await
                .expect_err("nan")
                .code,
            400
        );
        let mut no_rv = created.clone();
        meta::meta_mut(&mut no_rv).remove("resourceVersion");
        assert_eq!(
            s.update(&VM, Some("default"), "vm1", no_rv, &opts())
                .await
                .expect_err("CRs need an RV")
                .code,
            422
        );
        // A label change: new revision, same generation. Server-owned fields are kept.
        let mut labels = created.clone();
        labels["metadata"]["labels"]["tier"] = json!("db");
        labels["metadata"]["uid"] = json!("forged");
        labels["metadata"]["creationTimestamp"] = json!("2000-01-01T00:00:00Z");
        labels["status"] = json!({"ready": true});
        let u = s
            .update(&VM, Some("default"), "vm1", labels, &opts())
            .await
            .expect("update")
            .object;
        assert!(rv(&u) > rv(&created));
        assert_eq!(u["metadata"]["generation"], 1);
        assert_eq!(u["metadata"]["uid"], created["metadata"]["uid"]);
        assert_eq!(
            u["metadata"]["creationTimestamp"],
            created["metadata"]["creationTimestamp"]
        );
        assert!(
            u.get("status").is_none(),
            "the main resource ignores status"
        );
        // A spec change bumps the generation.
        let mut spec = u.clone();
        spec["spec"]["cpus"] = json!(4);
        let u2 = s
            .update(&VM, Some("default"), "vm1", spec, &opts())
            .await
            .expect("spec")
            .object;
        assert_eq!(u2["metadata"]["generation"], 2);
        // /status changes only status.
        let mut st = u2.clone();
        st["status"] = json!({"ready": true});
        st["spec"]["cpus"] = json!(8);
        let status = WriteOptions {
            subresource: Some(Subresource::Status),
            ..opts()
        };
        let u3 = s
            .update(&VM, Some("default"), "vm1", st, &status)
            .await
            .expect("status")
            .object;
        assert_eq!(u3["status"]["ready"], true);
        assert_eq!(u3["spec"]["cpus"], 4);
        assert_eq!(u3["metadata"]["generation"], 2);
        // A no-op update writes nothing.
        let rev = s.revision();
        let same = s
            .update(&VM, Some("default"), "vm1", u3.clone(), &opts())
            .await
            .expect("noop")
            .object;
        assert_eq!((rv(&same), s.revision()), (rv(&u3), rev));
        // Name mismatch, missing object.
        assert_eq!(
            s.update(&VM, Some("default"), "other", u3.clone(), &opts())
                .await
                .expect_err("name")
                .code,
            400
        );
        let mut ghost = vm("ghost");
        ghost["metadata"]["resourceVersion"] = json!("1");
        assert_eq!(
            s.update(&VM, Some("default"), "ghost", ghost, &opts())
                .await
                .expect_err("404")
                .code,
            404
        );
        // Built-in kinds may update without a resourceVersion.
        s.create(
            &PVC,
            Some("default"),
            json!({"metadata": {"name": "d"}, "spec": {"a": 1}}),
            &opts(),
        )
        .await
        .expect("pvc");
        s.update(
            &PVC,
            Some("default"),
            "d",
            json!({"metadata": {"name": "d", "labels": {"a": "2"}}, "spec": {"a": 1}}),
            &opts(),
        )
        .await
        .expect("unconditional update of a built-in kind");
        // A claim's spec is immutable once created (admission, as in Kubernetes).
        let err = s
            .update(
                &PVC,
                Some("default"),
                "d",
                json!({"metadata": {"name": "d"}, "spec": {"a": 2}}),
                &opts(),
            )
            .await
            .expect_err("a PVC's spec is immutable");
        assert_eq!(err.code, 422);
    }

    #[tokio::test]
    async fn patches() {
        let (s, _dir) = store();
        s.create(&VM, Some("default"), vm("vm1"), &opts())
            .await
            .expect("create");
        let o = opts();
        let p = |patch| s.patch(&VM, Some("default"), "vm1", patch, &o);
        let w = p(Patch::Merge(
            json!({"spec": {"cpus": 2}, "metadata": {"labels": {"app": null}}}),
        ))
        .await
        .expect("merge");
        assert_eq!(w.object["spec"]["cpus"], 2);
        assert!(w.object["metadata"]
            .get("labels")
            .expect("labels")
            .get("app")
            .is_none());
        assert_eq!(w.object["metadata"]["generation"], 2);
        let w = p(Patch::Json(
            json!([{"op": "replace", "path": "/spec/cpus", "value": 3}]),
        ))
        .await
        .expect("json patch");
        assert_eq!(w.object["spec"]["cpus"], 3);
        let e = p(Patch::Json(
            json!([{"op": "test", "path": "/spec/cpus", "value": 9}]),
        ))
        .await
        .expect_err("failed test");
        assert_eq!(e.code, 422);
        let e = p(Patch::Strategic(json!({"spec": {}})))
            .await
            .expect_err("CR smp");
        assert_eq!(e.code, 415);
        let e = p(Patch::Merge(
            json!({"metadata": {"resourceVersion": "1"}, "spec": {"cpus": 5}}),
        ))
        .await
        .expect_err("stale rv in patch");
        assert_eq!(e.code, 409);
        let e = p(Patch::Merge(json!({"spec": {"cpus": -1}})))
            .await
            .expect_err("invalid");
        assert_eq!(e.code, 422);
        let e = p(Patch::Merge(json!({"kind": "Other"})))
            .await
            .expect_err("kind");
        assert_eq!(e.code, 400);
        let status = WriteOptions {
            subresource: Some(Subresource::Status),
            ..opts()
        };
        let w = s
            .patch(
                &VM,
                Some("default"),
                "vm1",
                Patch::Merge(json!({"status": {"phase": "Running"}, "spec": {"cpus": 7}})),
                &status,
            )
            .await
            .expect("status patch");
        assert_eq!(
            (
                w.object["status"]["phase"].as_str(),
                w.object["spec"]["cpus"].as_i64()
            ),
            (Some("Running"), Some(3))
        );
        // Server-side apply creates, then merges.
        let applied = s
            .patch(
                &VM,
                Some("default"),
                "vm2",
                Patch::Apply(vm("vm2")),
                &opts(),
            )
            .await
            .expect("apply create");
        assert!(applied.created);
        let mut again = vm("vm2");
        again["spec"]["cpus"] = json!(6);
        let applied = s
            .patch(&VM, Some("default"), "vm2", Patch::Apply(again), &opts())
            .await
            .expect("apply update");
        assert!(!applied.created);
        assert_eq!(applied.object["spec"]["cpus"], 6);
        assert_eq!(
            s.patch(
                &VM,
                Some("default"),
                "nope",
                Patch::Merge(json!({})),
                &opts()
            )
            .await
            .expect_err("404")
            .code,
            404
        );
        // Strategic merge for built-in kinds.
        s.create(
            &NODE,
            None,
            json!({"metadata": {"name": "n1"}, "spec": {"taints": [{"key": "a"}]}}),
            &opts(),
        )
        .await
        .expect("node");
        let w = s
            .patch(
                &NODE,
                None,
                "n1",
                Patch::Strategic(json!({"metadata": {"labels": {"x": "y"}}})),
                &opts(),
            )
            .await
            .expect("smp");
        assert_eq!(w.object["metadata"]["labels"]["x"], "y");
    }

    #[tokio::test]
    async fn finalizers_hold_deletion() {
        let (s, _dir) = store();
        let mut body = vm("vm1");
        body["metadata"]["finalizers"] = json!(["example.com/guard"]);
        let created = s
            .create(&VM, Some("default"), body, &opts())
            .await
            .expect("create")
            .object;
        let wrong_uid = DeleteOptions {
            preconditions_uid: Some("x".into()),
            ..Default::default()
        };
        let wrong_rv = DeleteOptions {
            preconditions_rv: Some("1".into()),
            ..Default::default()
        };
        for (preconditions, which) in [
            (wrong_uid, "uid precondition"),
            (wrong_rv, "rv precondition"),
        ] {
            let e = s
                .delete(&VM, Some("default"), "vm1", &preconditions)
                .await
                .expect_err(which);
            assert_eq!(e.code, 409);
        }
        let d = s
            .delete(
                &VM,
                Some("default"),
                "vm1",
                &DeleteOptions {
                    grace_period_seconds: Some(30),
                    ..Default::default()
                },
            )
            .await
            .expect("delete");
        assert!(!d.removed);
        assert!(d.object["metadata"]["deletionTimestamp"].is_string());
        assert_eq!(d.object["metadata"]["deletionGracePeriodSeconds"], 30);
        assert_eq!(d.object["metadata"]["generation"], 2);
        let held = s.get(&VM, Some("default"), "vm1").expect("still there");
        // No new finalizers while deleting.
        let mut more = held.clone();
        more["metadata"]["finalizers"] = json!(["example.com/guard", "another"]);
        assert_eq!(
            s.update(&VM, Some("default"), "vm1", more, &opts())
                .await
                .expect_err("no new")
                .code,
            422
        );
        // Removing the last finalizer deletes it.
        let mut last = held.clone();
        last["metadata"]["finalizers"] = json!([]);
        let w = s
            .update(&VM, Some("default"), "vm1", last, &opts())
            .await
            .expect("release");
        assert!(rv(&w.object) > rv(&created));
        assert_eq!(
            s.get(&VM, Some("default"), "vm1").expect_err("gone").code,
            404
        );
        assert_eq!(
            s.delete(&VM, Some("default"), "vm1", &DeleteOptions::default())
                .await
                .expect_err("404")
                .code,
            404
        );
        // Without finalizers a delete removes at once and returns the last state.
        s.create(&VM, Some("default"), vm("vm2"), &opts())
            .await
            .expect("create");
        let d = s
            .delete(&VM, Some("default"), "vm2", &DeleteOptions::default())
            .await
            .expect("delete");
        assert!(d.removed);
        assert_eq!(d.object["metadata"]["name"], "vm2");
        assert_eq!(rv(&d.object), s.revision());
    }

    #[tokio::test]
    async fn lists_select_and_paginate() {
        let (s, _dir) = store();
        s.create(
            &NAMESPACE,
            None,
            json!({"metadata": {"name": "other"}}),
            &opts(),
        )
        .await
        .expect("ns");
        for i in 0..7 {
            let mut body = vm(&format!("vm{i}"));
            body["metadata"]["labels"]["idx"] = json!(format!("{}", i % 2));
            s.create(&VM, Some("default"), body, &opts())
                .await
                .expect("create");
        }
        s.create(&VM, Some("other"), vm("elsewhere"), &opts())
            .await
            .expect("create");
        let all = s.list(&VM, None, &ListOptions::default()).expect("list");
        assert_eq!(all.items.len(), 8);
        assert_eq!(all.resource_version, s.revision());
        assert_eq!(
            s.list(&VM, Some("default"), &ListOptions::default())
                .expect("ns")
                .items
                .len(),
            7
        );
        let sel = |l: &str, f: &str| ListOptions {
            label_selector: Some(l.into()),
            field_selector: Some(f.into()),
            ..Default::default()
        };
        assert_eq!(
            s.list(&VM, None, &sel("idx=1", ""))
                .expect("labels")
                .items
                .len(),
            3
        );
        assert_eq!(
            s.list(
                &VM,
                None,
                &sel("idx notin (1)", "metadata.namespace=default")
            )
            .expect("both")
            .items
            .len(),
            4
        );
        assert_eq!(
            s.list(&VM, Some("default"), &sel("", "metadata.name=vm3"))
                .expect("pinned")
                .items
                .len(),
            1
        );
        assert_eq!(
            s.list(&VM, None, &sel("", "metadata.name=vm3"))
                .expect("all ns")
                .items
                .len(),
            1
        );
        assert_eq!(
            s.list(&VM, None, &sel("a in b", "")).expect_err("bad").code,
            400
        );
        assert_eq!(
            s.list(&VM, None, &sel("", "spec.cpus=1"))
                .expect_err("unsupported")
                .code,
            400
        );
        // Pages of 3 over the 7 in default, all at the first page's revision.
        let mut names = Vec::new();
        let mut token = None;
        let mut pages = 0;
        let first_rv = s.revision();
        loop {
            let page = s
                .list(
                    &VM,
                    Some("default"),
                    &ListOptions {
                        limit: Some(3),
                        continue_token: token.clone(),
                        ..Default::default()
                    },
                )
                .expect("page");
            assert_eq!(page.resource_version, first_rv);
            names.extend(
                page.items
                    .iter()
                    .map(|o| o["metadata"]["name"].as_str().expect("name").to_string()),
            );
            pages += 1;
            // A write between pages does not change the list revision.
            s.patch(
                &VM,
                Some("other"),
                "elsewhere",
                Patch::Merge(json!({"metadata": {"labels": {"p": pages.to_string()}}})),
                &opts(),
            )
            .await
            .expect("patch");
            match page.continue_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        assert_eq!(pages, 3);
        assert_eq!(names, (0..7).map(|i| format!("vm{i}")).collect::<Vec<_>>());
        let bad = ListOptions {
            continue_token: Some("garbage".into()),
            ..Default::default()
        };
        assert_eq!(s.list(&VM, None, &bad).expect_err("bad token").code, 400);
        let bad = ListOptions {
            resource_version: Some("x".into()),
            ..Default::default()
        };
        assert_eq!(s.list(&VM, None, &bad).expect_err("bad rv").code, 400);
        let future = ListOptions {
            resource_version: Some((s.revision() + 5).to_string()),
            ..Default::default()
        };
        assert_eq!(s.list(&VM, None, &future).expect_err("future rv").code, 504);
        assert_eq!(
            s.watch(&VM, None, &future).expect_err("future rv").code,
            504
        );
    }

    #[tokio::test]
    async fn continue_token_expires_with_compaction() {
        let (s, _dir) = testing::store_with(StoreConfig {
            log_retention: 2,
            ..StoreConfig::default()
        });
        for i in 0..4 {
            s.create(&VM, Some("default"), vm(&format!("vm{i}")), &opts())
                .await
                .expect("create");
        }
        let page = s
            .list(
                &VM,
                None,
                &ListOptions {
                    limit: Some(1),
                    ..Default::default()
                },
            )
            .expect("page");
        for i in 4..8 {
            s.create(&VM, Some("default"), vm(&format!("vm{i}")), &opts())
                .await
                .expect("create");
        }
        s.compact().expect("compact");
        let e = s
            .list(
                &VM,
                None,
                &ListOptions {
                    limit: Some(1),
                    continue_token: page.continue_token,
                    ..Default::default()
                },
            )
            .expect_err("expired");
        assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
    }

    #[tokio::test]
    async fn namespaces_lifecycle() {
        let (s, _dir) = store();
        let default = s
            .get(&NAMESPACE, None, "default")
            .expect("default namespace");
        assert_eq!(default["status"]["phase"], "Active");
        assert_eq!(
            default["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "default"
        );
        let e = s
            .delete(&NAMESPACE, None, "default", &DeleteOptions::default())
            .await
            .expect_err("protected");
        assert_eq!(e.code, 403);
        let e = s
            .create(
                &NAMESPACE,
                None,
                json!({"metadata": {"name": "a.b"}}),
                &opts(),
            )
            .await
            .expect_err("label");
        assert_eq!(e.code, 422);
        s.create(
            &NAMESPACE,
            None,
            json!({"metadata": {"name": "team"}}),
            &opts(),
        )
        .await
        .expect("ns");
        let mut held = vm("held");
        held["metadata"]["finalizers"] = json!(["example.com/x"]);
        s.create(&VM, Some("team"), held, &opts())
            .await
            .expect("vm");
        s.create(&VM, Some("team"), vm("free"), &opts())
            .await
            .expect("vm");
        s.create(
            &PVC,
            Some("team"),
            json!({"metadata": {"name": "disk"}}),
            &opts(),
        )
        .await
        .expect("pvc");
        let d = s
            .delete(&NAMESPACE, None, "team", &DeleteOptions::default())
            .await
            .expect("delete ns");
        assert!(!d.removed);
        assert_eq!(d.object["status"]["phase"], "Terminating");
        let e = s
            .create(&VM, Some("team"), vm("late"), &opts())
            .await
            .expect_err("terminating");
        assert_eq!(e.code, 403);
        eventually("free content deleted", || {
            s.list(&PVC, Some("team"), &ListOptions::default())
                .expect("list")
                .items
                .is_empty()
                && s.get(&VM, Some("team"), "free").is_err()
                && s.get(&VM, Some("team"), "held")
                    .is_ok_and(|h| meta::is_deleting(&h))
        })
        .await;
        // The finalizer holds the VM, and the VM holds the namespace.
        let held = s.get(&VM, Some("team"), "held").expect("held");
        assert!(held["metadata"]["deletionTimestamp"].is_string());
        assert!(s.get(&NAMESPACE, None, "team").is_ok());
        let mut released = held;
        released["metadata"]["finalizers"] = json!([]);
        s.update(&VM, Some("team"), "held", released, &opts())
            .await
            .expect("release");
        eventually("namespace removed", || {
            s.get(&NAMESPACE, None, "team").is_err()
        })
        .await;
    }

    #[tokio::test]
    async fn survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (uid, revision) = {
            let s = Objects::open(dir.path()).expect("open");
            let w = s
                .create(&VM, Some("default"), vm("vm1"), &opts())
                .await
                .expect("create");
            (w.object["metadata"]["uid"].clone(), s.revision())
        };
        let s = Objects::open(dir.path()).expect("reopen");
        assert_eq!(s.revision(), revision);
        assert_eq!(
            s.get(&VM, Some("default"), "vm1").expect("get")["metadata"]["uid"],
            uid
        );
        let w = s
            .create(&VM, Some("default"), vm("vm2"), &opts())
            .await
            .expect("create");
        assert_eq!(rv(&w.object), revision + 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_creates_are_durable_ordered_and_watched_once() {
        let (s, _dir) = store();
        let start = s.revision();
        let mut watch = s
            .watch(
                &VM,
                None,
                &ListOptions {
                    resource_version: Some(start.to_string()),
                    ..Default::default()
                },
            )
            .expect("watch");
        const TASKS: usize = 16;
        const EACH: usize = 25;
        let mut handles = Vec::new();
        for t in 0..TASKS {
            let s = s.clone();
            handles.push(tokio::spawn(async move {
                let mut revisions = Vec::new();
                for i in 0..EACH {
                    let w = s
                        .create(&VM, Some("default"), vm(&format!("vm-{t}-{i}")), &opts())
                        .await
                        .expect("create");
                    // Acknowledged means readable (and durable).
                    assert!(s.get(&VM, Some("default"), &format!("vm-{t}-{i}")).is_ok());
                    revisions.push(rv(&w.object));
                }
                revisions
            }));
        }
        let mut all = Vec::new();
        for h in handles {
            let revs = h.await.expect("task");
            assert!(
                revs.windows(2).all(|w| w[0] < w[1]),
                "per-task revisions increase"
            );
            all.extend(revs);
        }
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), TASKS * EACH, "every revision is unique");
        let mut seen = Vec::new();
        while seen.len() < TASKS * EACH {
            let e = tokio::time::timeout(Duration::from_secs(10), watch.recv())
                .await
                .expect("watch keeps up")
                .expect("stream open");
            assert_eq!(e.type_, crate::store::WatchEventType::Added);
            seen.push(rv(&e.object));
        }
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "watch order is revision order"
        );
        assert_eq!(seen, all, "the watch saw every event exactly once");
        assert_eq!(
            s.list(&VM, None, &ListOptions::default())
                .expect("list")
                .items
                .len(),
            TASKS * EACH
        );
    }
}
