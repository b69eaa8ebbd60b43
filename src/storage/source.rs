//! The HTTP(S) source of an import: a streamed GET with CDI's options (basic-auth
//! credentials from a Secret's `accessKeyId`/`secretKey`, extra CA certificates from a
//! ConfigMap, extra headers), answering the body as an `AsyncRead` and its length.

use futures_util::TryStreamExt;
use std::time::Duration;
use tokio::io::AsyncRead;

/// Errors opening a source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("Invalid URL {0:?}")]
    Url(String),
    #[error("Invalid CA certificate in the cert ConfigMap")]
    Certificate(#[source] reqwest::Error),
    #[error("Invalid extra header {0:?}: want \"Name: value\"")]
    Header(String),
    #[error("Cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    /// The server could not be reached (refused, DNS, TLS, timeout).
    #[error("Unable to connect to {url}: {detail}")]
    Connect { url: String, detail: String },
    /// The server answered with an error status.
    #[error("HTTP request to {url} failed: {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
}

impl SourceError {
    /// Whether retrying later may help: an unreachable server, a 5xx, 408 or 429.
    pub fn retryable(&self) -> bool {
        match self {
            Self::Connect { .. } => true,
            Self::Status { status, .. } => {
                status.is_server_error()
                    || *status == reqwest::StatusCode::REQUEST_TIMEOUT
                    || *status == reqwest::StatusCode::TOO_MANY_REQUESTS
            }
            _ => false,
        }
    }
}

/// How to fetch an HTTP source.
#[derive(Debug, Clone, Default)]
pub struct HttpSource {
    pub url: String,
    /// Basic-auth user and password.
    pub basic_auth: Option<(String, String)>,
    /// PEM CA certificates to trust besides the built-in roots.
    pub ca_pem: Vec<Vec<u8>>,
    /// `Name: value` headers.
    pub extra_headers: Vec<String>,
}

/// An opened source: its body and, when the server said, its length.
pub struct Opened {
    pub body: Box<dyn AsyncRead + Unpin + Send>,
    pub length: Option<u64>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("length", &self.length)
            .finish()
    }
}

fn describe(e: &reqwest::Error) -> String {
    // reqwest's own message is generic; the innermost cause names what happened.
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

impl HttpSource {
    /// Sends the GET and returns the streaming body once the server answered 2xx.
    pub async fn open(&self) -> Result<Opened, SourceError> {
        let url = reqwest::Url::parse(&self.url).map_err(|_| SourceError::Url(self.url.clone()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(SourceError::Url(self.url.clone()));
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            // A stalled transfer fails instead of hanging forever.
            .read_timeout(Duration::from_secs(120))
            .user_agent(concat!("monovirt-importer/", env!("CARGO_PKG_VERSION")));
        for pem in &self.ca_pem {
            for cert in
                reqwest::Certificate::from_pem_bundle(pem).map_err(SourceError::Certificate)?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(SourceError::Client)?;
        let mut req = client.get(url);
        if let Some((user, pass)) = &self.basic_auth {
            req = req.basic_auth(user, Some(pass));
        }
        for h in &self.extra_headers {
            let (name, value) = h
                .split_once(':')
                .ok_or_else(|| SourceError::Header(h.clone()))?;
            req = req.header(name.trim(), value.trim());
        }
        let resp = req.send().await.map_err(|e| SourceError::Connect {
            url: self.url.clone(),
            detail: describe(&e),
        })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(SourceError::Status {
                url: self.url.clone(),
                status,
            });
        }
        let length = resp.content_length();
        let stream = resp
            .bytes_stream()
            .map_err(|e| std::io::Error::other(describe(&e)));
        Ok(Opened {
            body: Box::new(tokio_util::io::StreamReader::new(stream)),
            length,
        })
    }
}
