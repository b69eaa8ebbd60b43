//! The key-value [`Backend`] under [`Objects`](super::Objects): objects and index entries
//! by key, a global revision and a watch log, written in atomic transactions and made
//! durable by an explicit [`Backend::flush`] (so a committer can share one flush among
//! many writes).
//!
//! Key spaces: API objects live under `/` (`/{group}/{resource}[/{namespace}]/{name}`);
//! the registry's own indexes live under `~` and are never exported or watched.

/// The type of a watch-log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            Self::Added => b'A',
            Self::Modified => b'M',
            Self::Deleted => b'D',
        }
    }

    pub(crate) fn from_byte(b: u8) -> Option<Self> {
        match b {
            b'A' => Some(Self::Added),
            b'M' => Some(Self::Modified),
            b'D' => Some(Self::Deleted),
            _ => None,
        }
    }
}

/// One entry of the watch log: at `revision`, `key` was added, modified or deleted;
/// `object` is the stored JSON (for deletions, the last state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub revision: u64,
    pub event: EventType,
    pub key: String,
    pub object: Vec<u8>,
}

/// One key-value mutation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put(String, Vec<u8>),
    Delete(String),
}

/// An atomic write: mutations, the log entries they produce and the store revision
/// after them. All of it is applied, or none of it.
#[derive(Debug, Clone, Default)]
pub struct Txn {
    pub revision: u64,
    pub ops: Vec<Op>,
    pub log: Vec<LogEntry>,
}

/// Errors of a backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("Storage engine failed")]
    Engine(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("Stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("On-disk format version {found} is not supported (expected {expected})")]
    Format { found: String, expected: String },
}

/// A transactional key-value store with a revision counter and a watch log.
///
/// Callers serialise transactions themselves ([`Objects`](super::Objects) holds one write
/// lock); a backend only has to make each [`Txn`] atomic and [`Backend::flush`] durable.
pub trait Backend: Send + Sync + 'static {
    /// The value under `key`.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError>;

    /// Up to `limit` entries whose key starts with `prefix`, in key order, starting
    /// strictly after `start_after` when given.
    fn scan(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, BackendError>;

    /// Applies a transaction atomically (visible to reads at once, durable after the next
    /// [`Backend::flush`]).
    fn commit(&self, txn: &Txn) -> Result<(), BackendError>;

    /// Makes every committed transaction durable.
    fn flush(&self) -> Result<(), BackendError>;

    /// The revision of the last committed transaction (0 for an empty store).
    fn revision(&self) -> Result<u64, BackendError>;

    /// Up to `limit` log entries with a revision greater than `after`, in order.
    fn log_after(&self, after: u64, limit: usize) -> Result<Vec<LogEntry>, BackendError>;

    /// The highest revision removed from the log (0 if none): watches must start at or
    /// after it.
    fn compacted(&self) -> Result<u64, BackendError>;

    /// Removes log entries up to and including `revision`.
    fn compact(&self, revision: u64) -> Result<(), BackendError>;
}
