//! Where the client commands send their requests: `--server` (or `MONOVIRT_SERVER`), else
//! the local daemon's Unix socket if it exists, else `http://127.0.0.1:8080` (the defaults
//! of `monovirt serve`); `--token` (or `MONOVIRT_TOKEN`) as the bearer token; for an
//! `https://` server, `--ca-file` (or `MONOVIRT_CA_FILE`) as the CA to verify it with (as
//! `monovirt agent` takes it; default: the local server's CA if it exists, else the public
//! web roots); `-n` as the namespace.

use super::CliError;
use crate::client::tls::{TlsError, TlsOptions};
use crate::client::{Client, ClientError};
use clap::Args;
use std::path::{Path, PathBuf};

/// The Unix socket of `monovirt serve` with its default data dir.
pub const DEFAULT_SOCKET: &str = "/var/lib/monovirt/monovirt.sock";
/// The TCP address of `monovirt serve` with its default `--listen`.
pub const DEFAULT_HTTP: &str = "http://127.0.0.1:8080";
/// The namespace when neither `-n` nor the manifest names one.
pub const DEFAULT_NAMESPACE: &str = "default";
/// The CA of `monovirt serve` with its default data dir.
pub const DEFAULT_CA: &str = "/var/lib/monovirt/tls/ca.crt";

/// The options every client command takes.
#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// The API server: http://HOST:PORT, unix:PATH or a socket path [default: the local
    /// daemon's socket, else http://127.0.0.1:8080].
    #[arg(long, env = "MONOVIRT_SERVER", global = true)]
    pub server: Option<String>,
    /// Bearer token for the API server.
    #[arg(long, env = "MONOVIRT_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// The CA that signed an https:// server's certificate: a PEM file (the server's
    /// `<data-dir>/tls/ca.crt`) or a kubeconfig (`monovirt kubeconfig`) [default: the
    /// local server's /var/lib/monovirt/tls/ca.crt if it exists, else the public web
    /// roots].
    #[arg(long, env = "MONOVIRT_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
    /// The namespace [default: default].
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
}

/// An open client and what it was built from.
#[derive(Debug, Clone)]
pub struct Connection {
    pub client: Client,
    /// The server address, for messages.
    pub server: String,
    /// `-n`, or `default`.
    pub namespace: String,
    /// Whether `-n` was given (a manifest's own namespace must then match it).
    pub namespace_explicit: bool,
}

/// The server address `flag` means (see the module doc for the defaults).
pub fn server_address(flag: Option<&str>, default_socket: &Path) -> String {
    match flag.map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) if s.starts_with('/') => format!("unix:{s}"),
        Some(s) => s.to_string(),
        None if default_socket.exists() => format!("unix:{}", default_socket.display()),
        None => DEFAULT_HTTP.to_string(),
    }
}

/// The CA file to verify `server` with: `flag`, else `default_ca` for an `https://` server
/// when that file exists (the local server's own CA), else none (the public web roots).
pub fn ca_file(server: &str, flag: Option<&Path>, default_ca: &Path) -> Option<PathBuf> {
    match flag.filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => Some(p.to_path_buf()),
        None => (server.starts_with("https://") && default_ca.exists())
            .then(|| default_ca.to_path_buf()),
    }
}

impl ConnectionArgs {
    /// Opens the client (no request is sent yet).
    pub fn connect(&self) -> Result<Connection, CliError> {
        let server = server_address(self.server.as_deref(), Path::new(DEFAULT_SOCKET));
        let tls = match ca_file(&server, self.ca_file.as_deref(), Path::new(DEFAULT_CA)) {
            Some(path) => TlsOptions::from_file(&path).map_err(|e| match e {
                TlsError::Read(_, source) => CliError::Read { path, source },
                other => CliError::Usage(other.to_string()),
            })?,
            None => TlsOptions::default(),
        };
        let client =
            Client::http_with_tls(&server, self.token.as_deref(), &tls).map_err(|e| match e {
                ClientError::Endpoint(_) => CliError::Usage(e.to_string()),
                other => CliError::from_client(other, &server),
            })?;
        Ok(Connection {
            client,
            server,
            namespace: self
                .namespace
                .clone()
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
            namespace_explicit: self.namespace.is_some(),
        })
    }
}

impl Connection {
    /// Turns a client error into the CLI's, naming this server.
    pub fn error(&self, e: ClientError) -> CliError {
        CliError::from_client(e, &self.server)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_defaults_and_forms() {
        let none = Path::new("/nonexistent/monovirt.sock");
        assert_eq!(server_address(None, none), DEFAULT_HTTP);
        assert_eq!(server_address(Some(""), none), DEFAULT_HTTP);
        assert_eq!(
            server_address(Some("/run/m.sock"), none),
            "unix:/run/m.sock"
        );
        assert_eq!(
            server_address(Some("http://10.0.0.1:6443"), none),
            "http://10.0.0.1:6443"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("monovirt.sock");
        std::fs::write(&sock, b"").expect("file");
        assert_eq!(
            server_address(None, &sock),
            format!("unix:{}", sock.display())
        );
    }

    #[test]
    fn ca_file_flag_then_the_local_ca_for_https_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let local = dir.path().join("ca.crt");
        let flag = Path::new("/etc/my-ca.pem");
        let https = "https://10.0.0.1:6443";
        assert_eq!(ca_file(https, None, &local), None);
        assert_eq!(ca_file(https, Some(flag), &local), Some(flag.into()));
        std::fs::write(&local, b"").expect("file");
        assert_eq!(ca_file(https, None, &local), Some(local.clone()));
        assert_eq!(ca_file(https, Some(flag), &local), Some(flag.into()));
        assert_eq!(ca_file("http://10.0.0.1:8080", None, &local), None);
        assert_eq!(ca_file("unix:/run/m.sock", None, &local), None);
    }
}
