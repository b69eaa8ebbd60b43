//! Where the client commands send their requests: `--server` (or `MONOVIRT_SERVER`), else
//! the local daemon's Unix socket if it exists, else `http://127.0.0.1:8080` (the defaults
//! of `monovirt serve`); `--token` (or `MONOVIRT_TOKEN`) as the bearer token; `-n` as the
//! namespace.

use super::CliError;
use crate::client::{Client, ClientError};
use clap::Args;
use std::path::Path;

/// The Unix socket of `monovirt serve` with its default data dir.
pub const DEFAULT_SOCKET: &str = "/var/lib/monovirt/monovirt.sock";
/// The TCP address of `monovirt serve` with its default `--listen`.
pub const DEFAULT_HTTP: &str = "http://127.0.0.1:8080";
/// The namespace when neither `-n` nor the manifest names one.
pub const DEFAULT_NAMESPACE: &str = "default";

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

impl ConnectionArgs {
    /// Opens the client (no request is sent yet).
    pub fn connect(&self) -> Result<Connection, CliError> {
        let server = server_address(self.server.as_deref(), Path::new(DEFAULT_SOCKET));
        let client =
            Client::http_with_token(&server, self.token.as_deref()).map_err(|e| match e {
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
}
