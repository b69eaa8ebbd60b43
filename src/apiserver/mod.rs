//! The REST API server: Kubernetes' paths and wire behaviour over the store, so `curl` and
//! the stock `kubectl` work against monovirt as against Kubernetes with KubeVirt.
//!
//! - [`path`]: request paths resolved to discovery targets or a resource definition;
//! - [`discovery`]: `/version`, `/api`, `/apis` (aggregated v2 or legacy), resource lists;
//! - [`openapi`]: `/openapi/v3` index and per-group-version documents;
//! - [`negotiation`]: `Accept` (JSON or Table), body size limit, JSON/YAML decoding;
//! - [`subresource`]: KubeVirt's `subresources.kubevirt.io` (VM start/stop/restart, VMI
//!   pause/unpause through the [`node_endpoint`], the [`console`] WebSocket bridge);
//! - [`resource`]: get, list, create, update, patch, delete on the store's objects, with
//!   [`query`] parameters, [`table`] rendering and [`watch`] streams;
//! - [`error`]: every error as a `Status`;
//! - [`metrics`], [`vmi_metrics`], [`health`]: `/metrics` (API requests and KubeVirt's
//!   VMI series), `/healthz`, `/readyz`, `/livez`;
//! - [`auth`], [`audit`], [`tls`]: bearer tokens and roles per listener, the audit
//!   log, HTTPS with the server's own CA or the operator's certificate.
//!
//! [`run`] serves [`Listeners`] (loopback HTTP, HTTPS, the Unix socket) until its shutdown input
//! completes, then stops accepting, ends watch streams and waits for in-flight requests.
#![forbid(unsafe_code)]
// `ApiError` (160 bytes) is the API machinery's one error type; handlers return it
// unboxed, as the store does, and it is rendered once at the edge.
#![allow(clippy::result_large_err)]

pub mod audit;
pub mod auth;
pub mod console;
pub mod discovery;
pub mod error;
pub mod health;
pub mod metrics;
pub mod negotiation;
pub mod node_endpoint;
pub mod openapi;
pub mod path;
pub mod query;
pub mod resource;
pub mod subresource;
pub mod table;
#[cfg(test)]
pub(crate) mod testing;
pub mod tls;
pub mod vmi_metrics;
pub mod watch;

use crate::store::Objects;
use api::resource::ResourceDef;
use axum::extract::{Path as AxPath, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use error::HttpError;
use negotiation::{Accept, AGGREGATED_DISCOVERY};
use openapi::OpenApi;
use path::Target;
use serde_json::Value;
use std::collections::HashMap;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;

/// Errors starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("Cannot listen on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Serving HTTP failed")]
    Serve(#[source] std::io::Error),
    #[error("HTTPS listeners need a serving certificate and the token store")]
    NoTls,
}

/// Shared state of all handlers.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    objects: Objects,
    resources: Vec<ResourceDef>,
    openapi: OpenApi,
    metrics: metrics::Metrics,
    /// Tokens and audit log; `None` (tests, embedded servers): trusted listeners only.
    security: Option<Arc<auth::Security>>,
    /// The VMs this process runs, for the per-VMI metrics.
    vm_stats: Arc<crate::vmm::stats::Registry>,
    /// Cancelled when shutdown starts: long-running requests (watches) end.
    shutdown: CancellationToken,
    shutting_down: AtomicBool,
}

impl AppState {
    /// State serving `resources` from `objects`.
    pub fn new(objects: Objects, resources: Vec<ResourceDef>) -> Self {
        let openapi = OpenApi::build(&resources);
        Self {
            inner: Arc::new(Inner {
                objects,
                resources,
                openapi,
                metrics: metrics::Metrics::new(),
                security: None,
                vm_stats: Arc::default(),
                shutdown: CancellationToken::new(),
                shutting_down: AtomicBool::new(false),
            }),
        }
    }

    /// This state with `security` (tokens, audit log) for the listeners. Call before
    /// the state is cloned.
    pub fn with_security(mut self, security: auth::Security) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("with_security is called on a fresh, unshared state")
            .security = Some(Arc::new(security));
        self
    }

    /// The registry of running VMs whose statistics `/metrics` shows (the local agent
    /// registers its VMs here).
    pub fn vm_stats(&self) -> &Arc<crate::vmm::stats::Registry> {
        &self.inner.vm_stats
    }

    /// The request metrics.
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.inner.metrics
    }

    /// The served resource definitions.
    pub fn resources(&self) -> &[ResourceDef] {
        &self.inner.resources
    }

    /// The store.
    pub fn objects(&self) -> &Objects {
        &self.inner.objects
    }

    /// Cancelled once shutdown starts.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    /// Starts shutdown: readiness fails and watch streams end.
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        self.inner.shutdown.cancel();
    }
}

/// The router with every endpoint as a trusted (Unix-socket) listener serves it,
/// metrics around all of them.
pub fn router(state: AppState) -> Router {
    router_with(state, Router::new())
}

/// [`router`] plus `extra` routes served by other roles (storage's upload endpoints), under
/// the same layers.
pub fn router_with(state: AppState, extra: Router<AppState>) -> Router {
    listener_router(&state, extra, auth::Trust::Local("system:unix-socket"))
}

/// Every endpoint (and `extra`), without the per-listener layers.
fn routes(state: AppState, extra: Router<AppState>) -> Router {
    Router::new()
        .merge(extra)
        .route("/version", get(version))
        .route("/healthz", get(ready))
        .route("/readyz", get(ready))
        .route("/livez", get(live))
        .route("/metrics", get(metrics_text))
        .route("/openapi/v3", get(openapi_index))
        .route("/openapi/v3/{*path}", get(openapi_doc))
        .route("/apis/subresources.kubevirt.io", get(subresource::group))
        .route(
            "/apis/subresources.kubevirt.io/v1",
            get(subresource::discovery),
        )
        .route(
            "/apis/subresources.kubevirt.io/v1/namespaces/{ns}/virtualmachines/{name}/{action}",
            axum::routing::put(subresource::vm_action),
        )
        .route(
            "/apis/subresources.kubevirt.io/v1/namespaces/{ns}/virtualmachineinstances/{name}/console",
            get(subresource::console),
        )
        .route(
            "/apis/subresources.kubevirt.io/v1/namespaces/{ns}/virtualmachineinstances/{name}/{action}",
            axum::routing::put(subresource::vmi_action),
        )
        .route("/api", axum::routing::any(api))
        .route("/api/{*rest}", axum::routing::any(api))
        .route("/apis", axum::routing::any(api))
        .route("/apis/{*rest}", axum::routing::any(api))
        .fallback(not_found)
        .with_state(state)
}

fn json_response(value: &Value, content_type: &'static str) -> Response {
    let body = serde_json::to_vec(value).expect("a JSON value always serializes");
    let mut resp = body.into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

async fn not_found() -> HttpError {
    HttpError::no_route()
}

async fn version() -> Response {
    json_response(&discovery::version(), "application/json")
}

async fn ready(State(s): State<AppState>) -> Response {
    health::report(!s.inner.shutting_down.load(Ordering::SeqCst))
}

async fn live() -> Response {
    health::report(true)
}

async fn metrics_text(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let mut vmis = vmi_metrics::phase_counts(&s.inner.objects);
    vmis.push_str(&vmi_metrics::vm_samples(&s.inner.vm_stats));
    s.inner.metrics.response(&headers, &vmis)
}

async fn openapi_index(State(s): State<AppState>) -> Response {
    json_response(&s.inner.openapi.index(), "application/json")
}

async fn openapi_doc(
    State(s): State<AppState>,
    AxPath(path): AxPath<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    s.inner
        .openapi
        .serve(&path, q.get("hash").map(String::as_str), &headers)
        .unwrap_or_else(|| HttpError::no_route().into_response())
}

/// Everything under `/api` and `/apis`: discovery documents and resources.
async fn api(
    State(s): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let Some(target) = path::resolve(uri.path(), s.resources()) else {
        return HttpError::no_route().into_response();
    };
    let discovery_only = |m: &Method| m == Method::GET || m == Method::HEAD;
    let accept = Accept::from_headers(&headers);
    let rs = s.resources();
    match target {
        Target::CoreVersions | Target::Groups if !discovery_only(&method) => {
            HttpError::method_not_allowed(method.as_str(), uri.path()).into_response()
        }
        Target::CoreVersions if accept.wants_aggregated_discovery() => {
            json_response(&discovery::aggregated(rs, true), AGGREGATED_DISCOVERY)
        }
        Target::Groups if accept.wants_aggregated_discovery() => {
            let mut list = discovery::aggregated(rs, false);
            if let Some(items) = list["items"].as_array_mut() {
                items.push(subresource::aggregated_group());
            }
            json_response(&list, AGGREGATED_DISCOVERY)
        }
        Target::CoreVersions => json_response(&discovery::core_versions(rs), "application/json"),
        Target::Groups => {
            let mut list = discovery::group_list(rs);
            if let Some(groups) = list["groups"].as_array_mut() {
                groups.push(subresource::api_group());
            }
            json_response(&list, "application/json")
        }
        Target::Group(_) | Target::ResourceList { .. } if !discovery_only(&method) => {
            HttpError::method_not_allowed(method.as_str(), uri.path()).into_response()
        }
        Target::Group(g) => json_response(&discovery::group(rs, &g), "application/json"),
        Target::ResourceList { group, version } => json_response(
            &discovery::resource_list(rs, &group, &version),
            "application/json",
        ),
        Target::Resource(rp) => {
            resource::handle(
                s.clone(),
                method,
                *rp,
                uri.query().map(str::to_string),
                headers,
                body,
            )
            .await
        }
    }
}

/// The listening sockets: plain HTTP (loopback), HTTPS, and the Unix socket under the
/// data dir.
pub struct Listeners {
    pub http: Vec<TcpListener>,
    pub https: Vec<tls::TlsListener>,
    pub unix: Option<(UnixListener, PathBuf)>,
}

impl std::fmt::Debug for Listeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listeners")
            .field("http", &self.http)
            .field("https", &self.https.len())
            .field("unix", &self.unix)
            .finish()
    }
}

async fn bind_tcp(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: addr.to_string(),
            source,
        })
}

fn bind_unix(p: &Path) -> Result<UnixListener, ServeError> {
    let bind_err = |source| ServeError::Bind {
        addr: p.display().to_string(),
        source,
    };
    match std::fs::remove_file(p) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err(e)),
    }
    let l = UnixListener::bind(p).map_err(bind_err)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    Ok(l)
}

impl Listeners {
    /// Binds `addr` for plain HTTP (port 0 picks a free port) and, if given, the Unix
    /// socket at `socket` (a stale socket file from an earlier run is replaced; mode 0600).
    pub async fn bind(addr: SocketAddr, socket: Option<&Path>) -> Result<Self, ServeError> {
        Self::bind_all(&[addr], &[], None, socket).await
    }

    /// Binds every plain-HTTP address, every HTTPS address (served with `tls`, which
    /// must be given when `https` is not empty) and the Unix socket.
    pub async fn bind_all(
        http: &[SocketAddr],
        https: &[SocketAddr],
        tls: Option<Arc<rustls::ServerConfig>>,
        socket: Option<&Path>,
    ) -> Result<Self, ServeError> {
        let mut plain = Vec::new();
        for a in http {
            plain.push(bind_tcp(*a).await?);
        }
        let mut secure = Vec::new();
        if !https.is_empty() {
            let tls = tls.ok_or(ServeError::NoTls)?;
            for a in https {
                let l = bind_tcp(*a).await?;
                secure.push(tls::TlsListener::new(l, tls.clone()).map_err(|source| {
                    ServeError::Bind {
                        addr: a.to_string(),
                        source,
                    }
                })?);
            }
        }
        let unix = match socket {
            None => None,
            Some(p) => Some((bind_unix(p)?, p.to_path_buf())),
        };
        Ok(Self {
            http: plain,
            https: secure,
            unix,
        })
    }

    /// The first bound TCP address, plain HTTP before HTTPS (the real port when bound to
    /// port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        if let Some(l) = self.http.first() {
            return l.local_addr();
        }
        match self.https.first() {
            Some(l) => axum::serve::Listener::local_addr(l),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no TCP listener",
            )),
        }
    }

    /// The bound plain-HTTP addresses.
    pub fn http_addrs(&self) -> std::io::Result<Vec<SocketAddr>> {
        self.http.iter().map(TcpListener::local_addr).collect()
    }

    /// The bound HTTPS addresses.
    pub fn https_addrs(&self) -> std::io::Result<Vec<SocketAddr>> {
        self.https
            .iter()
            .map(axum::serve::Listener::local_addr)
            .collect()
    }
}

/// What `monovirt serve` needs to start the API server.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The store lives in `<data_dir>/store`, the Unix socket at `<data_dir>/monovirt.sock`.
    pub data_dir: PathBuf,
    /// Plain-HTTP addresses (loopback; port 0 picks a free port).
    pub listen: Vec<SocketAddr>,
    /// HTTPS addresses (bearer tokens required).
    pub tls_listen: Vec<SocketAddr>,
    /// The serving certificate when `tls_listen` is not empty.
    pub tls: Option<tls::ServingCert>,
}

/// Errors of [`Server::bind`] and [`Server::run`].
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("Cannot create the data directory {0}")]
    DataDir(PathBuf, #[source] std::io::Error),
    #[error("Cannot open the store")]
    Store(#[from] crate::store::StoreError),
    #[error("Cannot prepare the bearer tokens")]
    Tokens(#[from] crate::auth::token::TokenError),
    #[error("Cannot open the audit log {0}")]
    Audit(PathBuf, #[source] std::io::Error),
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// An API server bound to its sockets, with its store open, not yet serving.
pub struct Server {
    listeners: Listeners,
    state: AppState,
    extra: Router<AppState>,
}

impl Server {
    /// Opens the store under the data dir, issues the first-start tokens, opens the
    /// audit log and binds every listener.
    pub async fn bind(
        config: &ServeConfig,
        resources: Vec<ResourceDef>,
    ) -> Result<Self, ServerError> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|e| ServerError::DataDir(dir.clone(), e))?;
        {
            // The data dir holds tokens, keys and guests' disks: root's only.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| ServerError::DataDir(dir.clone(), e))?;
        }
        let objects = Objects::open(&dir.join("store"))?;
        let tokens = crate::auth::Tokens::in_data_dir(dir);
        tokens.bootstrap(dir)?;
        let audit_path = dir.join("audit.log");
        let audit =
            audit::AuditLog::open(&audit_path).map_err(|e| ServerError::Audit(audit_path, e))?;
        let listeners = Listeners::bind_all(
            &config.listen,
            &config.tls_listen,
            config.tls.as_ref().map(|t| t.server.clone()),
            Some(&dir.join("monovirt.sock")),
        )
        .await?;
        let security = auth::Security {
            tokens,
            audit: Some(audit),
        };
        Ok(Self {
            listeners,
            state: AppState::new(objects, resources).with_security(security),
            extra: Router::new(),
        })
    }

    /// Serves `routes` beside the API (before [`Server::run`]).
    pub fn add_routes(&mut self, routes: Router<AppState>) {
        let extra = std::mem::take(&mut self.extra);
        self.extra = extra.merge(routes);
    }

    /// The first bound TCP address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listeners.local_addr()
    }

    /// The bound listeners.
    pub fn listeners(&self) -> &Listeners {
        &self.listeners
    }

    /// The store the server serves (for roles running in the same process).
    pub fn objects(&self) -> &Objects {
        self.state.objects()
    }

    /// The handlers' shared state.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes; see [`run`].
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        run_with(self.listeners, self.state, self.extra, shutdown).await?;
        Ok(())
    }
}

/// The router for one listener: the auth gate (with `trust`) inside the metrics layer,
/// so refused requests are counted too.
fn listener_router(state: &AppState, extra: Router<AppState>, trust: auth::Trust) -> Router {
    let metrics = state.inner.metrics.clone();
    let gate = auth::Gate {
        security: state.inner.security.clone(),
        trust,
    };
    routes(state.clone(), extra)
        .layer(axum::middleware::from_fn_with_state(gate, auth::gate))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            metrics::track,
        ))
}

/// Serves the API on `listeners` until `shutdown` completes, then stops accepting, ends
/// watch streams and returns once in-flight requests are done. The socket file is removed.
pub async fn run(
    listeners: Listeners,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    run_with(listeners, state, Router::new(), shutdown).await
}

/// [`run`] with `extra` routes (see [`router_with`]).
pub async fn run_with(
    listeners: Listeners,
    state: AppState,
    extra: Router<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    if !listeners.https.is_empty() && state.inner.security.is_none() {
        return Err(ServeError::NoTls);
    }
    let token = state.inner.shutdown.clone();
    let trigger = {
        let state = state.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections, ending watches");
            state.begin_shutdown();
        })
    };
    let mut servers: Vec<futures_util::future::BoxFuture<'static, std::io::Result<()>>> =
        Vec::new();
    let done = || token.clone().cancelled_owned();
    for l in listeners.http {
        let app = listener_router(&state, extra.clone(), auth::Trust::Local("system:loopback"));
        servers.push(Box::pin(
            axum::serve(l, app)
                .with_graceful_shutdown(done())
                .into_future(),
        ));
    }
    for l in listeners.https {
        let app = listener_router(&state, extra.clone(), auth::Trust::Tokens);
        servers.push(Box::pin(
            axum::serve(l, app)
                .with_graceful_shutdown(done())
                .into_future(),
        ));
    }
    let mut socket_path = None;
    if let Some((l, path)) = listeners.unix {
        let app = listener_router(
            &state,
            extra.clone(),
            auth::Trust::Local("system:unix-socket"),
        );
        servers.push(Box::pin(
            axum::serve(l, app)
                .with_graceful_shutdown(done())
                .into_future(),
        ));
        socket_path = Some(path);
    }
    let results = futures_util::future::join_all(servers).await;
    if let Some(path) = socket_path {
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), "removing the socket: {e}");
        }
    }
    trigger.abort();
    results
        .into_iter()
        .collect::<Result<Vec<()>, _>>()
        .map(|_| ())
        .map_err(ServeError::Serve)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn call(app: &Router, req: Request<Body>) -> (StatusCode, HeaderMap, Value) {
        let resp = app.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let v = serde_json::from_slice(&body)
            .unwrap_or(Value::String(String::from_utf8_lossy(&body).into()));
        (status, headers, v)
    }

    fn get(uri: &str, accept: &str) -> Request<Body> {
        Request::get(uri)
            .header(header::ACCEPT, accept)
            .body(Body::empty())
            .expect("request")
    }

    fn app() -> Router {
        router(AppState::new(
            Objects::in_memory().expect("store"),
            testing::test_resources(),
        ))
    }

    #[tokio::test]
    async fn aggregated_discovery_content_type_is_exact() {
        let a = app();
        let acc =
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
        let (st, h, v) = call(&a, get("/apis", acc)).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(h[header::CONTENT_TYPE], AGGREGATED_DISCOVERY);
        assert_eq!(v["kind"], "APIGroupDiscoveryList");
        let (_, h, v) = call(&a, get("/api", acc)).await;
        assert_eq!(h[header::CONTENT_TYPE], AGGREGATED_DISCOVERY);
        assert_eq!(v["items"][0]["metadata"]["name"], "");
        let (_, h, v) = call(&a, get("/apis", "application/json, */*")).await;
        assert_eq!(h[header::CONTENT_TYPE], "application/json");
        assert_eq!(v["kind"], "APIGroupList");
        let (_, _, v) = call(&a, get("/api", "application/json")).await;
        assert_eq!(v["kind"], "APIVersions");
    }

    #[tokio::test]
    async fn resource_lists_version_and_404s() {
        let a = app();
        let (st, _, v) = call(&a, get("/apis/kubevirt.io/v1", "application/json")).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(v["kind"], "APIResourceList");
        let (_, _, v) = call(&a, get("/version", "application/json")).await;
        assert_eq!(v["minor"], "32");
        let (st, _, v) = call(&a, get("/openapi/v2", "application/json")).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        assert_eq!(v["kind"], "Status");
        let (st, _, _) = call(&a, get("/apis/nope.io/v1", "application/json")).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        let (st, _, v) = call(
            &a,
            Request::post("/apis/kubevirt.io/v1")
                .body(Body::empty())
                .expect("req"),
        )
        .await;
        assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(v["reason"], "MethodNotAllowed");
    }

    #[tokio::test]
    async fn openapi_and_health_and_metrics() {
        let a = app();
        let (st, _, idx) = call(&a, get("/openapi/v3", "application/json")).await;
        assert_eq!(st, StatusCode::OK);
        let url = idx["paths"]["apis/kubevirt.io/v1"]["serverRelativeURL"]
            .as_str()
            .expect("url")
            .to_string();
        let (st, h, doc) = call(&a, get(&url, "application/json")).await;
        assert_eq!(st, StatusCode::OK);
        assert!(h.contains_key(header::ETAG));
        assert_eq!(doc["openapi"], "3.0.0");
        for p in ["/healthz", "/readyz", "/livez"] {
            let (st, _, v) = call(&a, get(p, "*/*")).await;
            assert_eq!(st, StatusCode::OK);
            assert_eq!(v, Value::String("ok".into()));
        }
        let (st, _, text) = call(&a, get("/metrics", "*/*")).await;
        assert_eq!(st, StatusCode::OK);
        assert!(text
            .as_str()
            .expect("text")
            .contains(r#"apiserver_request_total{verb="get",resource="",code="200"}"#));
    }

    #[tokio::test]
    async fn readyz_fails_during_shutdown() {
        let state = AppState::new(
            Objects::in_memory().expect("store"),
            testing::test_resources(),
        );
        let a = router(state.clone());
        state.begin_shutdown();
        let (st, _, _) = call(&a, get("/readyz", "*/*")).await;
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
        let (st, _, _) = call(&a, get("/livez", "*/*")).await;
        assert_eq!(st, StatusCode::OK);
    }
}
