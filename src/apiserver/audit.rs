//! The audit log: one JSON line per mutating request (and per refused request of any
//! kind), in `<data-dir>/audit.log` (mode 0600): when, who, what, and the result.
//!
//! ```json
//! {"time":"2026-11-26T01:02:03.456Z","user":"token:ab12cd","verb":"delete",
//!  "method":"DELETE","uri":"/apis/kubevirt.io/v1/namespaces/default/virtualmachines/vm1",
//!  "namespace":"default","resource":"virtualmachines","name":"vm1","code":200}
//! ```
//!
//! Lines are appended with one `write` each (O_APPEND), so they never interleave.
//! Rotation is the operator's (logrotate with `copytruncate`).

use crate::auth::request::Attributes;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// An append-only JSON-lines file.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

#[derive(Serialize)]
struct Entry<'a> {
    time: String,
    user: &'a str,
    verb: &'a str,
    method: &'a str,
    uri: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subresource: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    code: u16,
}

impl AuditLog {
    /// Opens (creating, mode 0600) `path` for appending.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry. A failed write is logged, never fails the request.
    pub fn record(&self, user: &str, method: &str, uri: &str, attrs: &Attributes, code: u16) {
        let (namespace, resource, subresource, name) = match attrs {
            Attributes::Resource(r) => (
                r.namespace.as_deref(),
                Some(r.resource.as_str()),
                r.subresource.as_deref(),
                r.name.as_deref(),
            ),
            Attributes::NonResource { .. } => (None, None, None, None),
        };
        let entry = Entry {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            user,
            verb: attrs.verb(),
            method,
            uri,
            namespace,
            resource,
            subresource,
            name,
            code,
        };
        let mut line = serde_json::to_vec(&entry).expect("an audit entry always serializes");
        line.push(b'\n');
        let mut f = self.file.lock().expect("audit log lock is never poisoned");
        if let Err(e) = f.write_all(&line) {
            tracing::error!(path = %self.path.display(), "writing the audit log: {e}");
        }
    }
}
