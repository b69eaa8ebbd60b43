//! Bearer tokens and where they are kept.
//!
//! A token is `<id>.<secret>` (6 and 32 characters of `[a-z0-9]`, the shape of
//! Kubernetes' bootstrap tokens; about 165 bits of secret). The server never stores a
//! secret: `<data-dir>/tokens.json` (mode 0600, root's) lists each token's id, the
//! SHA-256 of its secret, its grant, and when it was made and expires. `monovirt token
//! create/revoke/list` edit that file directly (under an exclusive `flock`, written
//! atomically by rename), so they work whether or not the server runs, and access to
//! them is access to the file: root's, like the Unix socket. The server notices a new
//! file (inode, size, mtime) on the next request and re-reads it, so a revoked token
//! stops working at once.
//!
//! On first start the server issues an `admin` token into `<data-dir>/admin-token` and
//! a `node` token (for `monovirt agent --token`) into `<data-dir>/join-token`, both mode
//! 0600; deleting such a file and restarting issues a new one.

use super::role::Grant;
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

const ID_LEN: usize = 6;
const SECRET_LEN: usize = 32;
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Errors of the token store.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("Cannot read {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("{0} is not a valid token file")]
    Parse(PathBuf, #[source] serde_json::Error),
    #[error("Cannot write {0}")]
    Write(PathBuf, #[source] std::io::Error),
    #[error("The system's random source failed")]
    Random,
    #[error("No token with id {0:?}")]
    NotFound(String),
}

/// Why a bearer token was refused (all answered with the same 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("malformed token")]
    Malformed,
    #[error("unknown or revoked token")]
    Unknown,
    #[error("expired token")]
    Expired,
    #[error("the token store cannot be read")]
    Unavailable,
}

/// One issued token, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    pub id: String,
    /// Hex SHA-256 of the secret part.
    pub secret_sha256: String,
    #[serde(flatten)]
    pub grant: Grant,
    /// RFC 3339.
    pub created: String,
    /// RFC 3339; `None` never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

impl TokenRecord {
    fn expired(&self, now: SystemTime) -> bool {
        self.expires
            .as_deref()
            .and_then(|e| humantime::parse_rfc3339(e).ok())
            .is_some_and(|t| t <= now)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokenFile {
    tokens: Vec<TokenRecord>,
}

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `token:<id>`, or `system:unix-socket` / `system:loopback` for trusted listeners.
    pub user: String,
    pub grant: Grant,
}

/// (inode, size, mtime in ns): a rename or rewrite changes at least one.
type Stamp = (u64, u64, i128);

/// The token file, cached and re-read when it changes.
#[derive(Debug)]
pub struct Tokens {
    path: PathBuf,
    cache: Mutex<Option<(Stamp, Vec<TokenRecord>)>>,
}

fn hex_sha256(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Equal-time comparison (the compared values are hashes, but keep timing flat anyway).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn random_string(len: usize) -> Result<String, TokenError> {
    let rng = ring::rand::SystemRandom::new();
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        rng.fill(&mut buf).map_err(|_| TokenError::Random)?;
        // 252 = 7 * 36: reject the rest so every character is equally likely.
        out.extend(
            buf.iter()
                .filter(|b| **b < 252)
                .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
                .take(len - out.len()),
        );
    }
    Ok(out)
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Holds an exclusive `flock` on the token store's lock file while alive (closing the
/// descriptor on drop releases it).
struct FileLock(#[allow(dead_code)] std::fs::File);

impl FileLock {
    fn take(path: &Path) -> std::io::Result<Self> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)?;
        loop {
            // SAFETY: flock on a file descriptor this function owns (through `f`) for
            // the whole call; it touches no memory.
            let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
            if r == 0 {
                return Ok(Self(f));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Tokens {
    /// The store at `<data_dir>/tokens.json` (the file need not exist yet).
    pub fn in_data_dir(data_dir: &Path) -> Self {
        Self::at(data_dir.join("tokens.json"))
    }

    /// The store at `path`.
    pub fn at(path: PathBuf) -> Self {
        Self {
            path,
            cache: Mutex::new(None),
        }
    }

    /// The token file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read_file(&self) -> Result<Option<(Stamp, Vec<TokenRecord>)>, TokenError> {
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(TokenError::Read(self.path.clone(), e)),
        };
        let meta =
            std::fs::metadata(&self.path).map_err(|e| TokenError::Read(self.path.clone(), e))?;
        let file: TokenFile =
            serde_json::from_slice(&text).map_err(|e| TokenError::Parse(self.path.clone(), e))?;
        Ok(Some((stamp(&meta), file.tokens)))
    }

    /// All tokens.
    pub fn list(&self) -> Result<Vec<TokenRecord>, TokenError> {
        Ok(self.read_file()?.map(|(_, t)| t).unwrap_or_default())
    }

    /// Runs `edit` on the token list under the lock and writes the result.
    fn edit<T>(
        &self,
        edit: impl FnOnce(&mut Vec<TokenRecord>) -> Result<T, TokenError>,
    ) -> Result<T, TokenError> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| TokenError::Write(dir.to_path_buf(), e))?;
        }
        let lock_path = self.path.with_extension("lock");
        let _lock =
            FileLock::take(&lock_path).map_err(|e| TokenError::Write(lock_path.clone(), e))?;
        let mut tokens = self.list()?;
        let out = edit(&mut tokens)?;
        let text = serde_json::to_vec_pretty(&TokenFile { tokens })
            .expect("token records always serialize");
        crate::apiserver::tls::write_private(&self.path, &text, 0o600)
            .map_err(|e| TokenError::Write(self.path.clone(), e))?;
        Ok(out)
    }

    /// Issues a token for `grant`, valid for `ttl` (forever if `None`). Returns the
    /// token (shown once, never stored) and its record.
    pub fn issue(
        &self,
        grant: Grant,
        ttl: Option<Duration>,
        description: &str,
    ) -> Result<(String, TokenRecord), TokenError> {
        let secret = random_string(SECRET_LEN)?;
        let now = SystemTime::now();
        self.edit(|tokens| {
            let id = loop {
                let id = random_string(ID_LEN)?;
                if !tokens.iter().any(|t| t.id == id) {
                    break id;
                }
            };
            let record = TokenRecord {
                id: id.clone(),
                secret_sha256: hex_sha256(secret.as_bytes()),
                grant,
                created: rfc3339(now),
                expires: ttl.map(|d| rfc3339(now + d)),
                description: description.to_string(),
            };
            tokens.push(record.clone());
            Ok((format!("{id}.{secret}"), record))
        })
    }

    /// Revokes the token with this id (or the whole token's id part).
    pub fn revoke(&self, id_or_token: &str) -> Result<TokenRecord, TokenError> {
        let id = id_or_token
            .split('.')
            .next()
            .unwrap_or_default()
            .to_string();
        self.edit(|tokens| {
            let at = tokens
                .iter()
                .position(|t| t.id == id)
                .ok_or_else(|| TokenError::NotFound(id.clone()))?;
            Ok(tokens.remove(at))
        })
    }

    /// Who `bearer` is. Re-reads the file if it changed since the last call.
    pub fn authenticate(&self, bearer: &str) -> Result<Identity, Rejection> {
        let (id, secret) = bearer.trim().split_once('.').ok_or(Rejection::Malformed)?;
        if id.len() != ID_LEN || secret.len() != SECRET_LEN {
            return Err(Rejection::Malformed);
        }
        let mut cache = self
            .cache
            .lock()
            .expect("token cache lock is never poisoned");
        let current = std::fs::metadata(&self.path).ok().map(|m| stamp(&m));
        if current.is_none() {
            *cache = None;
            return Err(Rejection::Unknown);
        }
        if cache.as_ref().map(|(s, _)| Some(*s)) != Some(current) {
            match self.read_file() {
                Ok(fresh) => *cache = fresh,
                Err(e) => {
                    tracing::error!("reading the token store: {e}");
                    return Err(Rejection::Unavailable);
                }
            }
        }
        let tokens = cache.as_ref().map(|(_, t)| t.as_slice()).unwrap_or(&[]);
        let record = tokens
            .iter()
            .find(|t| t.id == id)
            .ok_or(Rejection::Unknown)?;
        if !same(
            record.secret_sha256.as_bytes(),
            hex_sha256(secret.as_bytes()).as_bytes(),
        ) {
            return Err(Rejection::Unknown);
        }
        if record.expired(SystemTime::now()) {
            return Err(Rejection::Expired);
        }
        Ok(Identity {
            user: format!("token:{id}"),
            grant: record.grant.clone(),
        })
    }

    /// On first start: issues the admin token into `<data_dir>/admin-token` and the
    /// node join token into `<data_dir>/join-token` unless those files exist.
    pub fn bootstrap(&self, data_dir: &Path) -> Result<(), TokenError> {
        for (file, grant, what) in [
            (
                "admin-token",
                Grant::ADMIN,
                "admin token made on first start",
            ),
            (
                "join-token",
                Grant::Node,
                "node join token made on first start",
            ),
        ] {
            let path = data_dir.join(file);
            if path.exists() {
                continue;
            }
            let (token, record) = self.issue(grant, None, what)?;
            crate::apiserver::tls::write_private(&path, format!("{token}\n").as_bytes(), 0o600)
                .map_err(|e| TokenError::Write(path.clone(), e))?;
            tracing::info!(id = %record.id, path = %path.display(), "issued the {what}");
        }
        Ok(())
    }
}

fn stamp(m: &std::fs::Metadata) -> Stamp {
    (
        m.ino(),
        m.size(),
        i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::role::Role;

    #[test]
    fn issue_authenticate_revoke() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = Tokens::in_data_dir(dir.path());
        let grant = Grant::User {
            role: Role::Edit,
            namespace: Some("ns1".into()),
        };
        let (token, rec) = t.issue(grant.clone(), None, "test").expect("issue");
        assert_eq!(token.len(), ID_LEN + 1 + SECRET_LEN);
        assert!(!std::fs::read_to_string(t.path())
            .expect("file")
            .contains(token.split_once('.').expect("dot").1));
        let who = t.authenticate(&token).expect("valid");
        assert_eq!(who.user, format!("token:{}", rec.id));
        assert_eq!(who.grant, grant);
        // A wrong secret with a known id.
        let forged = format!("{}.{}", rec.id, "a".repeat(SECRET_LEN));
        assert_eq!(t.authenticate(&forged), Err(Rejection::Unknown));
        assert_eq!(t.authenticate("nodot"), Err(Rejection::Malformed));
        // Another handle (the CLI) revokes: this one notices.
        Tokens::in_data_dir(dir.path())
            .revoke(&rec.id)
            .expect("revoke");
        assert_eq!(t.authenticate(&token), Err(Rejection::Unknown));
        assert!(matches!(t.revoke(&rec.id), Err(TokenError::NotFound(_))));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(t.path())
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn expiry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = Tokens::in_data_dir(dir.path());
        let (token, _) = t
            .issue(Grant::Node, Some(Duration::from_secs(3600)), "")
            .expect("issue");
        assert!(t.authenticate(&token).is_ok());
        let (old, _) = t
            .issue(Grant::Node, Some(Duration::ZERO), "")
            .expect("issue");
        assert_eq!(t.authenticate(&old), Err(Rejection::Expired));
    }

    #[test]
    fn bootstrap_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = Tokens::in_data_dir(dir.path());
        t.bootstrap(dir.path()).expect("bootstrap");
        let admin = std::fs::read_to_string(dir.path().join("admin-token")).expect("admin");
        let join = std::fs::read_to_string(dir.path().join("join-token")).expect("join");
        assert_eq!(t.authenticate(&admin).expect("admin").grant, Grant::ADMIN);
        assert_eq!(t.authenticate(&join).expect("join").grant, Grant::Node);
        t.bootstrap(dir.path()).expect("again");
        assert_eq!(t.list().expect("list").len(), 2);
    }
}
