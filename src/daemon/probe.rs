//! Is the API answering? A `GET /readyz` over the daemon's own Unix socket, the same
//! path every client takes, so a wedged accept loop, runtime or handler shows up. Used
//! for systemd's readiness notification and watchdog pings.

use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one probe may take before it counts as a failure.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Errors of a probe.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("Cannot reach the API socket")]
    Io(#[from] std::io::Error),
    #[error("The API did not answer within {0:?}")]
    Timeout(Duration),
    #[error("The API answered {0:?}")]
    NotReady(String),
}

/// Sends `GET /readyz` to the socket and expects `200`.
pub async fn api_ready(socket: &Path) -> Result<(), ProbeError> {
    let probe = async {
        let mut s = tokio::net::UnixStream::connect(socket).await?;
        s.write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut buf = Vec::with_capacity(256);
        // The status line is all we need; the server closes after the response.
        s.take(4096).read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf);
        let status = text.lines().next().unwrap_or_default().to_string();
        if status.starts_with("HTTP/1.1 200") {
            Ok(())
        } else {
            Err(ProbeError::NotReady(status))
        }
    };
    tokio::time::timeout(TIMEOUT, probe)
        .await
        .map_err(|_| ProbeError::Timeout(TIMEOUT))?
}
