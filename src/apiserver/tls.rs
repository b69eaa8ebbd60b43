//! HTTPS for the API: the serving certificate and a listener that completes TLS
//! handshakes off the accept path.
//!
//! The operator either names a certificate and key (`--tls-cert/--tls-key`), or the
//! server keeps its own CA under `<data-dir>/tls/` as k3s does:
//!
//! | file | what |
//! | --- | --- |
//! | `ca.crt`, `ca.key` (0600) | a self-signed CA, ECDSA P-256, 10 years |
//! | `server.crt`, `server.key` (0600) | the serving certificate the CA signs, 1 year |
//! | `server.sans` | the names the serving certificate was made for |
//!
//! The serving certificate is made again (by the same CA) when its names change or it
//! has less than 30 days left, so clients that trust `ca.crt` keep working.

use crate::daemon::config::TlsFiles;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

/// How long a client has to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const CA_DAYS: u64 = 3650;
const SERVER_DAYS: u64 = 365;
const RENEW_BEFORE_DAYS: u64 = 30;
const DAY: u64 = 86_400;

/// Errors preparing TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("Cannot read {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("Cannot write {0}")]
    Write(PathBuf, #[source] std::io::Error),
    #[error("{0} holds no PEM certificate")]
    NoCertificate(PathBuf),
    #[error("Cannot parse the PEM in {0}")]
    Pem(PathBuf, #[source] rustls::pki_types::pem::Error),
    #[error("Cannot make a certificate")]
    Generate(#[from] rcgen::Error),
    #[error("The certificate and key do not make a TLS configuration")]
    Config(#[from] rustls::Error),
}

/// The serving certificate chain and key, and the CA clients should trust.
#[derive(Debug, Clone)]
pub struct ServingCert {
    pub server: Arc<rustls::ServerConfig>,
    /// The CA certificate (PEM) clients verify the server with; for operator-given
    /// certificates, the chain's last certificate.
    pub ca_pem: String,
}

/// The names the serving certificate covers: the host's loopback names, the node name,
/// the host name, each specific `tls_listen` address, and the operator's extra names.
pub fn subject_names(node_name: &str, listen: &[SocketAddr], extra: &[String]) -> Vec<String> {
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    names.push(node_name.to_string());
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        names.push(h.trim().to_string());
    }
    names.extend(
        listen
            .iter()
            .filter(|a| !a.ip().is_unspecified())
            .map(|a| a.ip().to_string()),
    );
    names.extend(extra.iter().cloned());
    let mut seen = std::collections::BTreeSet::new();
    names.retain(|n| !n.is_empty() && seen.insert(n.clone()));
    names
}

impl ServingCert {
    /// The operator's files if given, otherwise the server's own CA and serving
    /// certificate for `names` under `<data_dir>/tls`, made or renewed as needed.
    pub fn load_or_create(
        data_dir: &Path,
        given: Option<&TlsFiles>,
        names: &[String],
    ) -> Result<Self, TlsError> {
        let (chain, key, ca_pem) = match given {
            Some(f) => {
                let chain = read_chain(&f.cert)?;
                let ca = chain.last().expect("read_chain returns at least one");
                let ca_pem = pem_encode("CERTIFICATE", ca);
                let key = PrivateKeyDer::from_pem_file(&f.key)
                    .map_err(|e| TlsError::Pem(f.key.clone(), e))?;
                (chain, key, ca_pem)
            }
            None => {
                let dir = data_dir.join("tls");
                ensure_own(&dir, names)?;
                let chain = read_chain(&dir.join("server.crt"))?;
                let key = PrivateKeyDer::from_pem_file(dir.join("server.key"))
                    .map_err(|e| TlsError::Pem(dir.join("server.key"), e))?;
                let ca_pem = read(&dir.join("ca.crt"))?;
                (chain, key, ca_pem)
            }
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            server: Arc::new(server),
            ca_pem,
        })
    }
}

fn read(p: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(p).map_err(|e| TlsError::Read(p.to_path_buf(), e))
}

fn read_chain(p: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_file_iter(p)
        .map_err(|e| TlsError::Pem(p.to_path_buf(), e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(p.to_path_buf(), e))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(p.to_path_buf()));
    }
    Ok(chain)
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Writes `contents` to `p` with `mode`, atomically (temporary file, then rename).
pub(crate) fn write_private(p: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = p.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    std::fs::rename(&tmp, p)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Sets `p`'s validity from `from` to `to` (seconds since the epoch; day precision).
fn set_validity(p: &mut rcgen::CertificateParams, from: u64, to: u64) {
    let ymd = |secs: u64| {
        let stamp =
            humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
                .to_string();
        rcgen::date_time_ymd(
            stamp[0..4].parse().expect("RFC 3339 year"),
            stamp[5..7].parse().expect("RFC 3339 month"),
            stamp[8..10].parse().expect("RFC 3339 day"),
        )
    };
    p.not_before = ymd(from);
    p.not_after = ymd(to);
}

fn ca_params() -> Result<rcgen::CertificateParams, rcgen::Error> {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "monovirt-ca");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

/// What `server.sans` records: the names, then the expiry (seconds since the epoch).
fn sans_record(names: &[String], not_after: u64) -> String {
    format!("{}\nnot_after={not_after}\n", names.join(","))
}

fn ensure_own(dir: &Path, names: &[String]) -> Result<(), TlsError> {
    std::fs::create_dir_all(dir).map_err(|e| TlsError::Write(dir.to_path_buf(), e))?;
    let w = |name: &str, data: &str, mode: u32| {
        let p = dir.join(name);
        write_private(&p, data.as_bytes(), mode).map_err(|e| TlsError::Write(p, e))
    };
    let now = now_secs();
    let ca_key_path = dir.join("ca.key");
    let ca_key = if ca_key_path.exists() && dir.join("ca.crt").exists() {
        rcgen::KeyPair::from_pem(&read(&ca_key_path)?)?
    } else {
        let key = rcgen::KeyPair::generate()?;
        let mut p = ca_params()?;
        set_validity(&mut p, now - DAY, now + CA_DAYS * DAY);
        let cert = p.self_signed(&key)?;
        w("ca.key", &key.serialize_pem(), 0o600)?;
        w("ca.crt", &cert.pem(), 0o644)?;
        // A new CA invalidates any serving certificate of an earlier one.
        let _ = std::fs::remove_file(dir.join("server.sans"));
        tracing::info!(dir = %dir.display(), "made the API's certificate authority");
        key
    };
    let sans_path = dir.join("server.sans");
    let current = std::fs::read_to_string(&sans_path).unwrap_or_default();
    let fresh = current.lines().next().is_some_and(|l| l == names.join(","))
        && current
            .lines()
            .find_map(|l| l.strip_prefix("not_after="))
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|t| t > now + RENEW_BEFORE_DAYS * DAY)
        && dir.join("server.crt").exists()
        && dir.join("server.key").exists();
    if fresh {
        return Ok(());
    }
    let issuer = rcgen::Issuer::new(ca_params()?, ca_key);
    let key = rcgen::KeyPair::generate()?;
    let mut p = rcgen::CertificateParams::new(names.to_vec())?;
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "monovirt-apiserver");
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    let not_after = now + SERVER_DAYS * DAY;
    set_validity(&mut p, now - DAY, not_after);
    let cert = p.signed_by(&key, &issuer)?;
    w("server.key", &key.serialize_pem(), 0o600)?;
    w("server.crt", &cert.pem(), 0o644)?;
    w("server.sans", &sans_record(names, not_after), 0o644)?;
    tracing::info!(names = %names.join(","), "made the API's serving certificate");
    Ok(())
}

/// A TCP listener whose connections come out TLS-terminated. Handshakes run in their
/// own tasks (with a timeout), so a slow or silent client delays nobody else.
pub struct TlsListener {
    local: SocketAddr,
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `tcp` with `config`.
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let task = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!("accepting a TLS connection: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { local, rx, task })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept task only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_ca_is_made_once_and_the_serving_cert_follows_its_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let names = subject_names("node-a", &["0.0.0.0:6443".parse().expect("addr")], &[]);
        assert!(names.contains(&"127.0.0.1".to_string()));
        assert!(!names.contains(&"0.0.0.0".to_string()));
        let a = ServingCert::load_or_create(dir.path(), None, &names).expect("first");
        let ca_key = std::fs::read(dir.path().join("tls/ca.key")).expect("ca key");
        let server = std::fs::read(dir.path().join("tls/server.crt")).expect("server");
        use std::os::unix::fs::PermissionsExt;
        for f in ["ca.key", "server.key"] {
            let mode = std::fs::metadata(dir.path().join("tls").join(f))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        // Same names: nothing changes.
        let b = ServingCert::load_or_create(dir.path(), None, &names).expect("second");
        assert_eq!(a.ca_pem, b.ca_pem);
        assert_eq!(
            server,
            std::fs::read(dir.path().join("tls/server.crt")).expect("server")
        );
        // A new name: a new serving certificate from the same CA.
        let mut more = names.clone();
        more.push("api.example".into());
        let c = ServingCert::load_or_create(dir.path(), None, &more).expect("third");
        assert_eq!(a.ca_pem, c.ca_pem);
        assert_eq!(
            ca_key,
            std::fs::read(dir.path().join("tls/ca.key")).expect("ca key")
        );
        assert_ne!(
            server,
            std::fs::read(dir.path().join("tls/server.crt")).expect("server")
        );
    }

    #[test]
    fn operator_files_are_used_as_given() {
        let dir = tempfile::tempdir().expect("tempdir");
        let own = dir.path().join("own");
        let names = vec!["localhost".to_string()];
        ServingCert::load_or_create(&own, None, &names).expect("make a pair");
        let files = TlsFiles {
            cert: own.join("tls/server.crt"),
            key: own.join("tls/server.key"),
        };
        let s = ServingCert::load_or_create(dir.path(), Some(&files), &names).expect("given");
        assert!(s.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(!dir.path().join("tls").exists());
        let bad = TlsFiles {
            cert: own.join("tls/server.key"),
            key: own.join("tls/server.key"),
        };
        let e = ServingCert::load_or_create(dir.path(), Some(&bad), &names).expect_err("no cert");
        assert!(e.to_string().contains("server.key"), "{e}");
    }
}
