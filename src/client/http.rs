//! The HTTP transport: the REST API over TCP (`http://HOST:PORT`), over TLS
//! (`https://HOST:PORT`, see [`super::tls`]) or the daemon's Unix socket
//! (`unix:/var/lib/monovirt/monovirt.sock`), with hyper's HTTP/1.1 client. Idle
//! keep-alive connections are pooled; a watch holds its own connection and is read as a
//! stream of JSON lines.

use super::tls::{Tls, TlsOptions};
use super::{ClientError, List, Reply};
use crate::store::{
    DeleteOptions, FieldValidation, ListOptions, Patch, Propagation, Subresource, WatchEvent,
    WatchEventType, WriteOptions,
};
use api::resource::ResourceDef;
use api::status::{ApiError, Cause, Details};
use bytes::{Bytes, BytesMut};
use futures_util::stream::{BoxStream, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Where the API server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `http://` (`tls: false`) or `https://` (`tls: true`).
    Tcp {
        host: String,
        port: u16,
        tls: bool,
    },
    Unix(PathBuf),
}

impl Endpoint {
    /// Parses `http://HOST:PORT[/]`, `https://HOST:PORT[/]`, `unix:PATH` or `unix://PATH`.
    pub fn parse(s: &str) -> Result<Self, ClientError> {
        if let Some(p) = s
            .strip_prefix("unix://")
            .or_else(|| s.strip_prefix("unix:"))
        {
            if p.is_empty() {
                return Err(ClientError::Endpoint(s.to_string()));
            }
            return Ok(Self::Unix(PathBuf::from(p)));
        }
        let (rest, tls) = match (s.strip_prefix("http://"), s.strip_prefix("https://")) {
            (Some(rest), _) => (rest, false),
            (_, Some(rest)) => (rest, true),
            _ => return Err(ClientError::Endpoint(s.to_string())),
        };
        let hostport = rest.trim_end_matches('/');
        let (host, port) = hostport
            .rsplit_once(':')
            .ok_or_else(|| ClientError::Endpoint(s.to_string()))?;
        let port = port
            .parse()
            .map_err(|_| ClientError::Endpoint(s.to_string()))?;
        if host.is_empty() || hostport.contains('/') {
            return Err(ClientError::Endpoint(s.to_string()));
        }
        Ok(Self::Tcp {
            host: host.trim_matches(['[', ']']).to_string(),
            port,
            tls,
        })
    }

    fn host_header(&self) -> String {
        match self {
            Self::Tcp { host, port, .. } if host.contains(':') => format!("[{host}]:{port}"),
            Self::Tcp { host, port, .. } => format!("{host}:{port}"),
            Self::Unix(_) => "localhost".to_string(),
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp { tls: false, .. } => write!(f, "http://{}", self.host_header()),
            Self::Tcp { tls: true, .. } => write!(f, "https://{}", self.host_header()),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

type Sender = SendRequest<Full<Bytes>>;

#[derive(Clone)]
pub(crate) struct Http {
    endpoint: Endpoint,
    /// Sent as `Authorization: Bearer <token>` on every request.
    token: Option<Arc<str>>,
    /// For `https://` endpoints.
    tls: Option<Tls>,
    idle: Arc<Mutex<Vec<Sender>>>,
}

/// A byte stream to the server: TCP or the Unix socket.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// A WebSocket to the server (the console subresource).
pub type WebSocket = tokio_tungstenite::WebSocketStream<Box<dyn Io>>;

/// The answer to a raw request ([`super::Client::request`]).
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: StatusCode,
    pub headers: header::HeaderMap,
    pub body: Bytes,
}

/// Most idle connections kept for reuse.
const MAX_IDLE: usize = 8;

fn collection_path(def: &ResourceDef, ns: Option<&str>) -> String {
    let root = if def.group.is_empty() {
        format!("/api/{}", def.version)
    } else {
        format!("/apis/{}/{}", def.group, def.version)
    };
    match ns {
        Some(ns) if def.namespaced => format!("{root}/namespaces/{ns}/{}", def.plural),
        _ => format!("{root}/{}", def.plural),
    }
}

fn object_path(
    def: &ResourceDef,
    ns: Option<&str>,
    name: &str,
    sub: Option<Subresource>,
) -> String {
    let mut p = format!("{}/{name}", collection_path(def, ns));
    if sub == Some(Subresource::Status) {
        p.push_str("/status");
    }
    p
}

fn with_query(path: String, pairs: &[(&str, String)]) -> String {
    if pairs.is_empty() {
        return path;
    }
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        ser.append_pair(k, v);
    }
    format!("{path}?{}", ser.finish())
}

fn list_query(opts: &ListOptions) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if let Some(v) = &opts.label_selector {
        q.push(("labelSelector", v.clone()));
    }
    if let Some(v) = &opts.field_selector {
        q.push(("fieldSelector", v.clone()));
    }
    if let Some(v) = opts.limit {
        q.push(("limit", v.to_string()));
    }
    if let Some(v) = &opts.continue_token {
        q.push(("continue", v.clone()));
    }
    if let Some(v) = &opts.resource_version {
        q.push(("resourceVersion", v.clone()));
    }
    if opts.allow_bookmarks {
        q.push(("allowWatchBookmarks", "true".into()));
    }
    q
}

fn write_query(opts: &WriteOptions) -> Vec<(&'static str, String)> {
    let mut q = vec![(
        "fieldValidation",
        match opts.field_validation {
            FieldValidation::Strict => "Strict",
            FieldValidation::Warn => "Warn",
            FieldValidation::Ignore => "Ignore",
        }
        .to_string(),
    )];
    if opts.dry_run {
        q.push(("dryRun", "All".into()));
    }
    if let Some(m) = &opts.field_manager {
        q.push(("fieldManager", m.clone()));
    }
    if opts.force {
        q.push(("force", "true".into()));
    }
    q
}

/// The `ApiError` a `Status` body stands for (`http_code` when the body has none).
pub fn error_from_status(http_code: u16, status: &Value) -> ApiError {
    let code = status["code"]
        .as_u64()
        .and_then(|c| u16::try_from(c).ok())
        .unwrap_or(http_code);
    let reason = status["reason"].as_str().unwrap_or("Unknown");
    let message = status["message"].as_str().unwrap_or_default();
    let mut e = ApiError::new(code, reason, message);
    if let Some(d) = status.get("details").filter(|d| d.is_object()) {
        let s = |k: &str| d[k].as_str().map(str::to_string);
        e.details = Some(Details {
            name: s("name"),
            group: s("group"),
            kind: s("kind"),
            causes: d["causes"]
                .as_array()
                .map(|cs| {
                    cs.iter()
                        .map(|c| Cause {
                            reason: c["reason"].as_str().unwrap_or_default().to_string(),
                            message: c["message"].as_str().unwrap_or_default().to_string(),
                            field: c["field"].as_str().unwrap_or_default().to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            retry_after_seconds: d["retryAfterSeconds"]
                .as_u64()
                .and_then(|r| u32::try_from(r).ok()),
        });
    }
    e
}

pub(crate) fn error_from_response(code: StatusCode, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if v["kind"] == "Status" => ClientError::Api(error_from_status(code.as_u16(), &v)),
        _ => ClientError::Api(ApiError::new(
            code.as_u16(),
            code.canonical_reason().unwrap_or("Unknown"),
            String::from_utf8_lossy(body).into_owned(),
        )),
    }
}

/// The `Warning: 299 - "text"` headers' texts.
fn warnings(headers: &header::HeaderMap) -> Vec<String> {
    headers
        .get_all(header::WARNING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| {
            let quoted = v.split_once(" - ")?.1.trim();
            let inner = quoted.strip_prefix('"')?.strip_suffix('"')?;
            Some(inner.replace("\\\"", "\"").replace("\\\\", "\\"))
        })
        .collect()
}

impl Http {
    pub(crate) fn new(
        endpoint: &str,
        token: Option<&str>,
        tls: &TlsOptions,
    ) -> Result<Self, ClientError> {
        let endpoint = Endpoint::parse(endpoint)?;
        let tls = match &endpoint {
            Endpoint::Tcp {
                host, tls: true, ..
            } => Some(Tls::new(host, tls)?),
            _ => None,
        };
        Ok(Self {
            endpoint,
            token: token.filter(|t| !t.is_empty()).map(Arc::from),
            tls,
            idle: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// A new connection's byte stream (no HTTP on it yet).
    async fn stream(&self) -> Result<Box<dyn Io>, ClientError> {
        Ok(match &self.endpoint {
            Endpoint::Tcp { host, port, .. } => {
                let s = tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(ClientError::Connect)?;
                s.set_nodelay(true).map_err(ClientError::Connect)?;
                match &self.tls {
                    Some(tls) => Box::new(tls.connect(s).await?),
                    None => Box::new(s),
                }
            }
            Endpoint::Unix(p) => Box::new(
                tokio::net::UnixStream::connect(p)
                    .await
                    .map_err(ClientError::Connect)?,
            ),
        })
    }

    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    async fn connect(&self) -> Result<Sender, ClientError> {
        let io = self.stream().await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(ClientError::Http)?;
        // The detached task drives the connection and ends with it; its errors surface
        // on the sender.
        drop(tokio::spawn(conn));
        Ok(sender)
    }

    /// An idle pooled connection that is still usable, or a new one.
    async fn checkout(&self) -> Result<Sender, ClientError> {
        loop {
            let candidate = self
                .idle
                .lock()
                .expect("pool lock poisoned only by a panic")
                .pop();
            match candidate {
                Some(mut s) => {
                    if s.ready().await.is_ok() {
                        return Ok(s);
                    }
                }
                None => return self.connect().await,
            }
        }
    }

    fn checkin(&self, s: Sender) {
        let mut idle = self
            .idle
            .lock()
            .expect("pool lock poisoned only by a panic");
        if idle.len() < MAX_IDLE && !s.is_closed() {
            idle.push(s);
        }
    }

    fn request(
        &self,
        method: Method,
        uri: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Request<Full<Bytes>> {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, self.endpoint.host_header())
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("monovirt/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(ct) = content_type {
            b = b.header(header::CONTENT_TYPE, ct);
        }
        if let Some(t) = &self.token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        b.body(Full::new(body))
            .expect("method, path and headers are valid by construction")
    }

    async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<(Sender, Response<Incoming>), ClientError> {
        let mut sender = self.checkout().await?;
        let resp = sender.send_request(req).await.map_err(ClientError::Http)?;
        Ok((sender, resp))
    }

    /// One request with a fully read response; errors become [`ClientError::Api`].
    async fn call(
        &self,
        method: Method,
        uri: String,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<(StatusCode, header::HeaderMap, Value), ClientError> {
        let req = self.request(method, &uri, content_type, body);
        let (sender, resp) = self.send(req).await?;
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.map_err(ClientError::Http)?.to_bytes();
        self.checkin(sender);
        if !parts.status.is_success() {
            return Err(error_from_response(parts.status, &bytes));
        }
        let v = serde_json::from_slice(&bytes).map_err(ClientError::Decode)?;
        Ok((parts.status, parts.headers, v))
    }

    /// One request on `path_and_query` with `accept`; the body is returned as it came.
    /// Non-2xx answers become [`ClientError::Api`].
    pub(crate) async fn raw(
        &self,
        method: Method,
        path_and_query: &str,
        accept: &str,
        body: Option<(&str, Bytes)>,
    ) -> Result<RawResponse, ClientError> {
        let (ct, bytes) = match body {
            Some((ct, b)) => (Some(ct), b),
            None => (None, Bytes::new()),
        };
        let mut req = self.request(method, path_and_query, ct, bytes);
        let accept = header::HeaderValue::from_str(accept)
            .map_err(|_| ClientError::Endpoint(format!("invalid Accept header {accept:?}")))?;
        req.headers_mut().insert(header::ACCEPT, accept);
        let (sender, resp) = self.send(req).await?;
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.map_err(ClientError::Http)?.to_bytes();
        self.checkin(sender);
        if !parts.status.is_success() {
            return Err(error_from_response(parts.status, &bytes));
        }
        Ok(RawResponse {
            status: parts.status,
            headers: parts.headers,
            body: bytes,
        })
    }

    /// Opens a WebSocket on `path_and_query` (on its own connection, never pooled). A
    /// refused upgrade with a `Status` body becomes [`ClientError::Api`].
    pub(crate) async fn websocket(&self, path_and_query: &str) -> Result<WebSocket, ClientError> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::Error as WsError;
        let url = format!("ws://{}{path_and_query}", self.endpoint.host_header());
        let mut req = url
            .as_str()
            .into_client_request()
            .map_err(|e| ClientError::WebSocket(Box::new(e)))?;
        if let Some(t) = &self.token {
            let v = header::HeaderValue::from_str(&format!("Bearer {t}"))
                .map_err(|_| ClientError::Endpoint("invalid bearer token".into()))?;
            req.headers_mut().insert(header::AUTHORIZATION, v);
        }
        let io = self.stream().await?;
        match tokio_tungstenite::client_async(req, io).await {
            Ok((ws, _)) => Ok(ws),
            Err(WsError::Http(resp)) => {
                let body = resp.body().clone().unwrap_or_default();
                Err(error_from_response(resp.status(), &body))
            }
            Err(e) => Err(ClientError::WebSocket(Box::new(e))),
        }
    }

    fn json(v: &Value) -> Bytes {
        Bytes::from(serde_json::to_vec(v).expect("a JSON value always serializes"))
    }

    pub(crate) async fn get(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        status: bool,
    ) -> Result<Value, ClientError> {
        let sub = status.then_some(Subresource::Status);
        Ok(self
            .call(
                Method::GET,
                object_path(def, ns, name, sub),
                None,
                Bytes::new(),
            )
            .await?
            .2)
    }

    pub(crate) async fn list(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<List<Value>, ClientError> {
        let uri = with_query(collection_path(def, ns), &list_query(opts));
        let (_, _, mut v) = self.call(Method::GET, uri, None, Bytes::new()).await?;
        let items = match v["items"].take() {
            Value::Array(a) => a,
            _ => Vec::new(),
        };
        Ok(List {
            items,
            resource_version: v["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            continue_token: v["metadata"]["continue"]
                .as_str()
                .filter(|c| !c.is_empty())
                .map(str::to_string),
        })
    }

    /// Sends a write (POST, PUT or PATCH) of `body` as `content_type` to `path`, with the
    /// write options as its query; the answer is the object as stored, whether it was
    /// created (201) and the server's warnings.
    async fn write(
        &self,
        method: Method,
        path: String,
        opts: &WriteOptions,
        content_type: &str,
        body: &Value,
    ) -> Result<Reply, ClientError> {
        let uri = with_query(path, &write_query(opts));
        let (code, headers, object) = self
            .call(method, uri, Some(content_type), Self::json(body))
            .await?;
        Ok(Reply {
            object,
            created: code == StatusCode::CREATED,
            warnings: warnings(&headers),
        })
    }

    pub(crate) async fn create(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        obj: Value,
        opts: &WriteOptions,
    ) -> Result<Reply, ClientError> {
        let path = collection_path(def, ns);
        self.write(Method::POST, path, opts, "application/json", &obj)
            .await
    }

    pub(crate) async fn update(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        obj: Value,
        opts: &WriteOptions,
    ) -> Result<Reply, ClientError> {
        let path = object_path(def, ns, name, opts.subresource);
        self.write(Method::PUT, path, opts, "application/json", &obj)
            .await
    }

    pub(crate) async fn patch(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        patch: Patch,
        opts: &WriteOptions,
    ) -> Result<Reply, ClientError> {
        let (content_type, body) = match &patch {
            Patch::Merge(v) => ("application/merge-patch+json", v),
            Patch::Json(v) => ("application/json-patch+json", v),
            Patch::Apply(v) => ("application/apply-patch+yaml", v),
            Patch::Strategic(v) => ("application/strategic-merge-patch+json", v),
        };
        let path = object_path(def, ns, name, opts.subresource);
        self.write(Method::PATCH, path, opts, content_type, body)
            .await
    }

    pub(crate) async fn delete(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<(Value, bool), ClientError> {
        let mut body = json!({"kind": "DeleteOptions", "apiVersion": "v1"});
        if let Some(p) = opts.propagation {
            body["propagationPolicy"] = json!(match p {
                Propagation::Background => "Background",
                Propagation::Foreground => "Foreground",
                Propagation::Orphan => "Orphan",
            });
        }
        if let Some(g) = opts.grace_period_seconds {
            body["gracePeriodSeconds"] = json!(g);
        }
        if opts.preconditions_rv.is_some() || opts.preconditions_uid.is_some() {
            body["preconditions"] =
                json!({"resourceVersion": opts.preconditions_rv, "uid": opts.preconditions_uid});
        }
        if opts.dry_run {
            body["dryRun"] = json!(["All"]);
        }
        let (code, _, v) = self
            .call(
                Method::DELETE,
                object_path(def, ns, name, None),
                Some("application/json"),
                Self::json(&body),
            )
            .await?;
        Ok((v, code == StatusCode::OK))
    }

    pub(crate) async fn watch(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<BoxStream<'static, Result<WatchEvent, ClientError>>, ClientError> {
        let mut q = list_query(opts);
        q.push(("watch", "true".into()));
        let req = self.request(
            Method::GET,
            &with_query(collection_path(def, ns), &q),
            None,
            Bytes::new(),
        );
        // A watch keeps its connection for its whole life: never pooled.
        let mut sender = self.connect().await?;
        let resp = sender.send_request(req).await.map_err(ClientError::Http)?;
        let (parts, body) = resp.into_parts();
        if !parts.status.is_success() {
            let bytes = body.collect().await.map_err(ClientError::Http)?.to_bytes();
            return Err(error_from_response(parts.status, &bytes));
        }
        let state = (body, BytesMut::new(), sender);
        Ok(
            futures_util::stream::unfold(state, |(mut body, mut buf, sender)| async move {
                loop {
                    if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                        let line = buf.split_to(pos + 1);
                        if line.iter().all(u8::is_ascii_whitespace) {
                            continue;
                        }
                        return Some((parse_event(&line), (body, buf, sender)));
                    }
                    match body.frame().await {
                        None => return None,
                        Some(Err(e)) => {
                            return Some((Err(ClientError::Http(e)), (body, buf, sender)))
                        }
                        Some(Ok(frame)) => {
                            if let Ok(data) = frame.into_data() {
                                buf.extend_from_slice(&data);
                            }
                        }
                    }
                }
            })
            .boxed(),
        )
    }
}

fn parse_event(line: &[u8]) -> Result<WatchEvent, ClientError> {
    let mut v: Value = serde_json::from_slice(line).map_err(ClientError::Decode)?;
    let type_ = match v["type"].as_str() {
        Some("ADDED") => WatchEventType::Added,
        Some("MODIFIED") => WatchEventType::Modified,
        Some("DELETED") => WatchEventType::Deleted,
        Some("BOOKMARK") => WatchEventType::Bookmark,
        _ => WatchEventType::Error,
    };
    Ok(WatchEvent {
        type_,
        object: v["object"].take(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:8080").expect("tcp"),
            Endpoint::Tcp {
                host: "127.0.0.1".into(),
                port: 8080,
                tls: false
            }
        );
        assert_eq!(
            Endpoint::parse("http://[::1]:80/").expect("v6"),
            Endpoint::Tcp {
                host: "::1".into(),
                port: 80,
                tls: false
            }
        );
        let https = Endpoint::parse("https://api.example:6443").expect("https");
        assert_eq!(
            https,
            Endpoint::Tcp {
                host: "api.example".into(),
                port: 6443,
                tls: true
            }
        );
        assert_eq!(https.to_string(), "https://api.example:6443");
        assert_eq!(
            Endpoint::parse("unix:/run/m.sock").expect("unix"),
            Endpoint::Unix("/run/m.sock".into())
        );
        assert_eq!(
            Endpoint::parse("unix:///run/m.sock").expect("unix"),
            Endpoint::Unix("/run/m.sock".into())
        );
        assert!(Endpoint::parse("ftp://x:1").is_err());
        assert!(Endpoint::parse("http://x").is_err());
        assert_eq!(
            Endpoint::parse("http://[::1]:80").expect("v6").to_string(),
            "http://[::1]:80"
        );
    }

    #[test]
    fn status_round_trip() {
        let e = ApiError::invalid(
            "kubevirt.io",
            "VirtualMachine",
            "bad",
            vec![Cause::required("spec")],
        );
        let back = error_from_status(0, &e.to_status());
        assert_eq!(back, e);
    }

    #[test]
    fn warning_headers() {
        let mut h = header::HeaderMap::new();
        h.append(
            header::WARNING,
            r#"299 - "unknown field \"spec.foo\"""#.parse().expect("hv"),
        );
        assert_eq!(
            warnings(&h),
            vec![r#"unknown field "spec.foo""#.to_string()]
        );
    }

    #[test]
    fn paths_and_queries() {
        let def = crate::apiserver::testing::VM;
        assert_eq!(
            object_path(&def, Some("default"), "vm1", Some(Subresource::Status)),
            "/apis/kubevirt.io/v1/namespaces/default/virtualmachines/vm1/status"
        );
        let q = list_query(&ListOptions {
            label_selector: Some("a=b".into()),
            ..ListOptions::default()
        });
        assert_eq!(
            with_query(collection_path(&def, None), &q),
            "/apis/kubevirt.io/v1/virtualmachines?labelSelector=a%3Db"
        );
    }
}
