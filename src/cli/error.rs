//! The client commands' errors, worded as kubectl and virtctl word them:
//! `Error from server (NotFound): virtualmachines.kubevirt.io "vm1" not found`.

use crate::client::ClientError;
use api::status::ApiError;
use std::path::PathBuf;

/// Why a client command failed. `Display` is the whole line printed on stderr.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server answered with a `Status`.
    #[error("Error from server ({}): {}", .0.reason, .0.message)]
    Server(ApiError),
    /// The server could not be reached.
    #[error("The connection to the server {server} failed ({source}) - is `monovirt serve` running, and are --server / MONOVIRT_SERVER right?")]
    Connect {
        server: String,
        #[source]
        source: std::io::Error,
    },
    /// Another client failure (HTTP, decoding, WebSocket).
    #[error("error: {}", chain(.0))]
    Client(ClientError),
    /// The command line asks for something that cannot be done.
    #[error("error: {0}")]
    Usage(String),
    #[error("error: cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A manifest is not usable (bad YAML, unknown kind, no name).
    #[error("error: {source_name}: {message}")]
    Manifest {
        source_name: String,
        message: String,
    },
    /// Writing the output or driving the terminal failed.
    #[error("error: {0}")]
    Io(#[from] std::io::Error),
    /// Some of several objects failed; each was reported on its own line already.
    #[error("error: {0} of the objects failed")]
    Partial(usize),
}

/// An error and its sources, `: `-joined.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl CliError {
    /// Wraps a client error, naming `server` when it could not be reached.
    pub fn from_client(e: ClientError, server: &str) -> Self {
        match e {
            ClientError::Api(a) => Self::Server(a),
            ClientError::Connect(source) => Self::Connect {
                server: server.to_string(),
                source,
            },
            other => Self::Client(other),
        }
    }

    /// The API error code when the server answered with a `Status`.
    pub fn code(&self) -> Option<u16> {
        match self {
            Self::Server(a) => Some(a.code),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_read_like_kubectl() {
        let e = CliError::from_client(
            ClientError::Api(ApiError::not_found("kubevirt.io", "virtualmachines", "vm1")),
            "unix:/x",
        );
        assert_eq!(
            e.to_string(),
            r#"Error from server (NotFound): virtualmachines.kubevirt.io "vm1" not found"#
        );
        assert_eq!(e.code(), Some(404));
    }

    #[test]
    fn connection_errors_name_the_server() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = CliError::from_client(ClientError::Connect(io), "http://127.0.0.1:1");
        let s = e.to_string();
        assert!(s.starts_with("The connection to the server http://127.0.0.1:1 failed (refused)"));
    }
}
