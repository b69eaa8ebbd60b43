//! TLS for the HTTP transport (`https://HOST:PORT`), on rustls with the ring provider, the
//! stack the API server serves with.
//!
//! The server is verified against the CA the caller names ([`TlsOptions::ca_pem`]: the
//! server's own `<data-dir>/tls/ca.crt`, a `--ca-file`, or a kubeconfig's
//! `certificate-authority-data`), or, when none is named, the public web roots (a server
//! certificate an operator had signed by a public CA). The host name or IP address of the
//! URL must be one of the certificate's subject names, as for any HTTPS client.

use super::ClientError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// How an HTTPS client trusts its server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM certificates of the CAs to trust instead of the public web roots.
    pub ca_pem: Option<Vec<u8>>,
}

impl TlsOptions {
    /// Trusts the CAs in `path`: a PEM bundle, or a kubeconfig (as `monovirt kubeconfig`
    /// prints it) whose current cluster's `certificate-authority-data` is used.
    pub fn from_file(path: &std::path::Path) -> Result<Self, TlsError> {
        let bytes =
            std::fs::read(path).map_err(|e| TlsError::Read(path.display().to_string(), e))?;
        let ca_pem = if bytes.windows(11).any(|w| w == b"-----BEGIN ") {
            bytes
        } else {
            kubeconfig_ca(&bytes).ok_or_else(|| TlsError::NoCa(path.display().to_string()))?
        };
        Ok(Self {
            ca_pem: Some(ca_pem),
        })
    }
}

/// The `certificate-authority-data` of a kubeconfig's current context's cluster (or of
/// its only cluster).
fn kubeconfig_ca(yaml: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine;
    let doc: serde_json::Value = serde_yaml_ng::from_slice(yaml).ok()?;
    let clusters = doc["clusters"].as_array()?;
    let current = doc["current-context"].as_str();
    let wanted = doc["contexts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"].as_str() == current)
        .and_then(|c| c["context"]["cluster"].as_str());
    let cluster = match wanted {
        Some(name) => clusters.iter().find(|c| c["name"].as_str() == Some(name))?,
        None if clusters.len() == 1 => &clusters[0],
        None => return None,
    };
    let data = cluster["cluster"]["certificate-authority-data"].as_str()?;
    base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .ok()
}

/// Errors setting TLS up or completing a handshake.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("Cannot read {0}")]
    Read(String, #[source] std::io::Error),
    #[error("{0} is neither a PEM CA bundle nor a kubeconfig with certificate-authority-data")]
    NoCa(String),
    #[error("The CA bundle holds no PEM certificate")]
    NoCertificate,
    #[error("Cannot parse the CA bundle")]
    Pem(#[source] rustls::pki_types::pem::Error),
    #[error("Cannot trust a CA certificate")]
    Trust(#[source] rustls::Error),
    #[error("Cannot set up TLS")]
    Config(#[source] rustls::Error),
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
    #[error("TLS handshake with the API server failed")]
    Handshake(#[source] std::io::Error),
}

impl From<TlsError> for ClientError {
    fn from(e: TlsError) -> Self {
        ClientError::Tls(Box::new(e))
    }
}

/// A client side of TLS, ready to wrap connections to one server name.
#[derive(Clone)]
pub(crate) struct Tls {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("name", &self.name).finish()
    }
}

impl Tls {
    /// TLS to `host` (a DNS name or an IP address) trusting what `options` says.
    pub(crate) fn new(host: &str, options: &TlsOptions) -> Result<Self, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        match &options.ca_pem {
            Some(pem) => {
                let certs = CertificateDer::pem_slice_iter(pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(TlsError::Pem)?;
                if certs.is_empty() {
                    return Err(TlsError::NoCertificate);
                }
                for c in certs {
                    roots.add(c).map_err(TlsError::Trust)?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        // HTTP/1.1 only: the transport speaks nothing else (and WebSockets need it).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| TlsError::ServerName(host.to_string()))?;
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            name,
        })
    }

    /// Completes the handshake on `tcp`.
    pub(crate) async fn connect(&self, tcp: TcpStream) -> Result<TlsStream<TcpStream>, TlsError> {
        self.connector
            .connect(self.name.clone(), tcp)
            .await
            .map_err(TlsError::Handshake)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_bundles_are_checked() {
        let none = TlsOptions {
            ca_pem: Some(b"not a certificate".to_vec()),
        };
        assert!(matches!(
            Tls::new("127.0.0.1", &none),
            Err(TlsError::NoCertificate)
        ));
        let key = rcgen::KeyPair::generate().expect("key");
        let ca = rcgen::CertificateParams::new(vec!["monovirt-ca".into()])
            .expect("params")
            .self_signed(&key)
            .expect("self-signed");
        let good = TlsOptions {
            ca_pem: Some(ca.pem().into_bytes()),
        };
        assert!(Tls::new("127.0.0.1", &good).is_ok());
        assert!(Tls::new("api.example", &good).is_ok());
        assert!(Tls::new("127.0.0.1", &TlsOptions::default()).is_ok());
        assert!(matches!(
            Tls::new("bad name!", &good),
            Err(TlsError::ServerName(_))
        ));

        // The same CA from a PEM file and from a kubeconfig.
        let dir = tempfile::tempdir().expect("tempdir");
        let pem_file = dir.path().join("ca.crt");
        std::fs::write(&pem_file, ca.pem()).expect("write");
        assert_eq!(TlsOptions::from_file(&pem_file).expect("pem"), good);
        let kubeconfig = dir.path().join("kubeconfig");
        let rendered =
            crate::daemon::kubeconfig::render("https://127.0.0.1:6443", &ca.pem(), "t", "default");
        std::fs::write(&kubeconfig, rendered).expect("write");
        assert_eq!(
            TlsOptions::from_file(&kubeconfig).expect("kubeconfig"),
            good
        );
        std::fs::write(&kubeconfig, "apiVersion: v1\nclusters: []\n").expect("write");
        assert!(matches!(
            TlsOptions::from_file(&kubeconfig),
            Err(TlsError::NoCa(_))
        ));
    }
}
