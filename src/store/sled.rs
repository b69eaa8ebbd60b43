//! The sled [`Backend`]: one sled tree, each [`Txn`] one atomic batch.
//!
//! Layout of the tree:
//! - `/…` API objects and `~…` registry indexes, as given by the caller;
//! - `\x01` + big-endian u64 revision → a log entry: the event byte (`A`, `M`, `D`), the key
//!   length (big-endian u32), the key, then the object JSON;
//! - `\x00format`, `\x00revision`, `\x00compacted`: metadata. The format version is checked
//!   on open, so a later layout change is a migration (export, then import), not a surprise.

use super::backend::{Backend, BackendError, EventType, LogEntry, Op, Txn};
use std::path::Path;
use std::time::{Duration, Instant};

/// The on-disk layout version this code reads and writes.
pub const FORMAT_VERSION: &str = "1";

const META_FORMAT: &[u8] = b"\x00format";
const META_REVISION: &[u8] = b"\x00revision";
const META_COMPACTED: &[u8] = b"\x00compacted";
const LOG_PREFIX: u8 = 0x01;

/// How long opening waits for the database's file lock while another handle in this
/// process lets go of it: sled releases the lock when the last of a dropped handle's
/// background I/O jobs ends, a moment after the drop (its own test suite blocks on the
/// lock for this reason). A lock still held after this has another owner (a second
/// daemon on the same data directory), and the open fails.
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// Whether `e` is sled's "could not acquire lock" (the file lock is held; sled reports it
/// as an `Other` I/O error with that message only).
fn lock_busy(e: &::sled::Error) -> bool {
    matches!(e, ::sled::Error::Io(io) if io.kind() == std::io::ErrorKind::Other
        && io.to_string().starts_with("could not acquire lock"))
}

/// A [`Backend`] on a sled database.
pub struct SledBackend {
    db: ::sled::Db,
}

fn engine(e: ::sled::Error) -> BackendError {
    BackendError::Engine(Box::new(e))
}

fn log_key(revision: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = LOG_PREFIX;
    k[1..].copy_from_slice(&revision.to_be_bytes());
    k
}

fn read_u64(v: &[u8]) -> Result<u64, BackendError> {
    let bytes: [u8; 8] = v
        .try_into()
        .map_err(|_| BackendError::Corrupt(format!("counter of {} bytes", v.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

fn encode_entry(e: &LogEntry) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + e.key.len() + e.object.len());
    v.push(e.event.to_byte());
    let len = u32::try_from(e.key.len()).expect("keys are far shorter than 4 GiB");
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(e.key.as_bytes());
    v.extend_from_slice(&e.object);
    v
}

fn decode_entry(revision: u64, v: &[u8]) -> Result<LogEntry, BackendError> {
    let corrupt = || BackendError::Corrupt(format!("log entry {revision}"));
    let (&event, rest) = v.split_first().ok_or_else(corrupt)?;
    let event = EventType::from_byte(event).ok_or_else(corrupt)?;
    let len_bytes: [u8; 4] = rest
        .get(..4)
        .ok_or_else(corrupt)?
        .try_into()
        .map_err(|_| corrupt())?;
    let len = u32::from_be_bytes(len_bytes) as usize;
    let key = rest.get(4..4 + len).ok_or_else(corrupt)?;
    let key = String::from_utf8(key.to_vec()).map_err(|_| corrupt())?;
    let object = rest.get(4 + len..).ok_or_else(corrupt)?.to_vec();
    Ok(LogEntry {
        revision,
        event,
        key,
        object,
    })
}

impl SledBackend {
    /// Opens or creates the database in `dir`, checking its format version.
    pub fn open(dir: &Path) -> Result<Self, BackendError> {
        Self::with_config(::sled::Config::new().path(dir))
    }

    /// A database in a temporary directory, removed when dropped.
    pub fn temporary() -> Result<Self, BackendError> {
        Self::with_config(::sled::Config::new().temporary(true))
    }

    fn with_config(config: ::sled::Config) -> Result<Self, BackendError> {
        // Durability comes from the committer's explicit flushes; sled's periodic
        // background flush would only add fsyncs.
        let config = config
            .mode(::sled::Mode::HighThroughput)
            .flush_every_ms(None);
        let deadline = Instant::now() + LOCK_WAIT;
        let db = loop {
            match config.open() {
                Err(e) if lock_busy(&e) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                opened => break opened.map_err(engine)?,
            }
        };
        match db.get(META_FORMAT).map_err(engine)? {
            Some(v) if v.as_ref() != FORMAT_VERSION.as_bytes() => {
                return Err(BackendError::Format {
                    found: String::from_utf8_lossy(&v).into_owned(),
                    expected: FORMAT_VERSION.to_string(),
                });
            }
            Some(_) => {}
            None => {
                db.insert(META_FORMAT, FORMAT_VERSION.as_bytes())
                    .map_err(engine)?;
                db.flush().map_err(engine)?;
            }
        }
        Ok(Self { db })
    }

    fn meta_u64(&self, key: &[u8]) -> Result<u64, BackendError> {
        match self.db.get(key).map_err(engine)? {
            Some(v) => read_u64(&v),
            None => Ok(0),
        }
    }
}

impl Backend for SledBackend {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self
            .db
            .get(key.as_bytes())
            .map_err(engine)?
            .map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, BackendError> {
        let iter = match start_after {
            Some(start) => {
                let mut from = start.as_bytes().to_vec();
                from.push(0);
                self.db.range(from..)
            }
            None => self.db.range(prefix.as_bytes()..),
        };
        let mut out = Vec::new();
        for item in iter {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item.map_err(engine)?;
            if !k.starts_with(prefix.as_bytes()) {
                break;
            }
            let key = String::from_utf8(k.to_vec())
                .map_err(|_| BackendError::Corrupt("non-UTF-8 key".into()))?;
            out.push((key, v.to_vec()));
        }
        Ok(out)
    }

    fn commit(&self, txn: &Txn) -> Result<(), BackendError> {
        let mut batch = ::sled::Batch::default();
        for op in &txn.ops {
            match op {
                Op::Put(k, v) => batch.insert(k.as_bytes(), v.as_slice()),
                Op::Delete(k) => batch.remove(k.as_bytes()),
            }
        }
        for e in &txn.log {
            batch.insert(&log_key(e.revision)[..], encode_entry(e));
        }
        batch.insert(META_REVISION, &txn.revision.to_be_bytes()[..]);
        self.db.apply_batch(batch).map_err(engine)
    }

    fn flush(&self) -> Result<(), BackendError> {
        self.db.flush().map(|_| ()).map_err(engine)
    }

    fn revision(&self) -> Result<u64, BackendError> {
        self.meta_u64(META_REVISION)
    }

    fn log_after(&self, after: u64, limit: usize) -> Result<Vec<LogEntry>, BackendError> {
        let from = log_key(after.saturating_add(1));
        let mut out = Vec::new();
        for item in self.db.range(from..) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item.map_err(engine)?;
            if k.first() != Some(&LOG_PREFIX) {
                break;
            }
            let revision = read_u64(k.get(1..).unwrap_or_default())?;
            out.push(decode_entry(revision, &v)?);
        }
        Ok(out)
    }

    fn compacted(&self) -> Result<u64, BackendError> {
        self.meta_u64(META_COMPACTED)
    }

    fn compact(&self, revision: u64) -> Result<(), BackendError> {
        if revision <= self.compacted()? {
            return Ok(());
        }
        let mut batch = ::sled::Batch::default();
        for item in self.db.range(log_key(0)..=log_key(revision)) {
            let (k, _) = item.map_err(engine)?;
            batch.remove(k);
        }
        batch.insert(META_COMPACTED, &revision.to_be_bytes()[..]);
        self.db.apply_batch(batch).map_err(engine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(revision: u64, key: &str) -> LogEntry {
        LogEntry {
            revision,
            event: EventType::Added,
            key: key.to_string(),
            object: format!("{{\"rv\":{revision}}}").into_bytes(),
        }
    }

    fn put(b: &SledBackend, revision: u64, key: &str) {
        let e = entry(revision, key);
        let txn = Txn {
            revision,
            ops: vec![Op::Put(key.to_string(), e.object.clone())],
            log: vec![e],
        };
        b.commit(&txn).expect("commit");
    }

    #[test]
    fn commit_scan_log_and_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let b = SledBackend::open(dir.path()).expect("open");
            put(&b, 1, "/core/namespaces/a");
            put(&b, 2, "/core/namespaces/b");
            put(&b, 3, "/kubevirt.io/virtualmachines/a/x");
            put(&b, 4, "~uid/123");
            b.flush().expect("flush");
            let all = b.scan("/core/namespaces/", None, 10).expect("scan");
            assert_eq!(all.len(), 2);
            let after = b
                .scan("/core/namespaces/", Some("/core/namespaces/a"), 10)
                .expect("scan");
            assert_eq!(after[0].0, "/core/namespaces/b");
            assert_eq!(b.scan("/", None, 1).expect("scan").len(), 1);
            assert_eq!(b.scan("/", None, 100).expect("scan").len(), 3);
        }
        let b = SledBackend::open(dir.path()).expect("reopen");
        assert_eq!(b.revision().expect("rev"), 4);
        let log = b.log_after(1, 100).expect("log");
        assert_eq!(
            log.iter().map(|e| e.revision).collect::<Vec<_>>(),
            [2, 3, 4]
        );
        assert_eq!(log[1], entry(3, "/kubevirt.io/virtualmachines/a/x"));
        assert_eq!(b.log_after(2, 1).expect("log").len(), 1);
        b.compact(2).expect("compact");
        assert_eq!(b.compacted().expect("compacted"), 2);
        assert_eq!(b.log_after(0, 100).expect("log")[0].revision, 3);
        // Objects survive compaction.
        assert!(b.get("/core/namespaces/a").expect("get").is_some());
    }

    #[test]
    fn a_second_handle_on_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = SledBackend::open(dir.path()).expect("open");
        let t = Instant::now();
        let err = SledBackend::open(dir.path())
            .err()
            .expect("the lock has an owner");
        assert!(t.elapsed() >= LOCK_WAIT, "refused only after waiting");
        let BackendError::Engine(source) = err else {
            panic!("engine error expected, got {err}");
        };
        assert!(
            source.to_string().contains("could not acquire lock"),
            "{source}"
        );
    }

    #[test]
    fn rejects_other_format_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = ::sled::open(dir.path()).expect("sled");
            db.insert(META_FORMAT, &b"99"[..]).expect("insert");
            db.flush().expect("flush");
        }
        match SledBackend::open(dir.path()) {
            Err(BackendError::Format { found, .. }) => assert_eq!(found, "99"),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("opened a store of another format"),
        }
    }
}
