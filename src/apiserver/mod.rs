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
//! - [`metrics`], [`health`]: `/metrics`, `/healthz`, `/readyz`, `/livez`.
//!
//! [`run`] serves a [`Listeners`] pair (TCP and the Unix socket) until its shutdown input
//! completes, then stops accepting, ends watch streams and waits for in-flight requests.
#![forbid(unsafe_code)]
// `ApiError` (160 bytes) is the API machinery's one error type; handlers return it
// unboxed, as the store does, and it is rendered once at the edge.
#![allow(clippy::result_large_err)]

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
use std::future::Future;
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
                shutdown: CancellationToken::new(),
                shutting_down: AtomicBool::new(false),
            }),
        }
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

/// The router with every endpoint, metrics around all of them.
pub fn router(state: AppState) -> Router {
    router_with(state, Router::new())
}

/// [`router`] plus `extra` routes served by other roles (storage's upload endpoints), under
/// the same layers.
pub fn router_with(state: AppState, extra: Router<AppState>) -> Router {
    let metrics = state.inner.metrics.clone();
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
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            metrics::track,
        ))
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

async fn metrics_text(State(s): State<AppState>) -> Response {
    s.inner.metrics.response()
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

/// The listening sockets: TCP (`--listen`) and the Unix socket under the data dir.
#[derive(Debug)]
pub struct Listeners {
    pub tcp: TcpListener,
    pub unix: Option<(UnixListener, PathBuf)>,
}

impl Listeners {
    /// Binds `addr` (port 0 picks a free port) and, if given, the Unix socket at
    /// `socket` (a stale socket file from an earlier run is replaced; mode 0600).
    pub async fn bind(addr: SocketAddr, socket: Option<&Path>) -> Result<Self, ServeError> {
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind {
                addr: addr.to_string(),
                source,
            })?;
        let unix = match socket {
            None => None,
            Some(p) => {
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
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600))
                    .map_err(bind_err)?;
                Some((l, p.to_path_buf()))
            }
        };
        Ok(Self { tcp, unix })
    }

    /// The bound TCP address (the real port when bound to port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// What `monovirt serve` needs to start the API server.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The store lives in `<data_dir>/store`, the Unix socket at `<data_dir>/monovirt.sock`.
    pub data_dir: PathBuf,
    /// The TCP address (port 0 picks a free port).
    pub listen: SocketAddr,
}

/// Errors of [`Server::bind`] and [`Server::run`].
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("Cannot create the data directory {0}")]
    DataDir(PathBuf, #[source] std::io::Error),
    #[error("Cannot open the store")]
    Store(#[from] crate::store::StoreError),
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
    /// Opens the store under the data dir and binds TCP and the Unix socket.
    pub async fn bind(
        config: &ServeConfig,
        resources: Vec<ResourceDef>,
    ) -> Result<Self, ServerError> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| ServerError::DataDir(config.data_dir.clone(), e))?;
        let objects = Objects::open(&config.data_dir.join("store"))?;
        let listeners =
            Listeners::bind(config.listen, Some(&config.data_dir.join("monovirt.sock"))).await?;
        Ok(Self {
            listeners,
            state: AppState::new(objects, resources),
            extra: Router::new(),
        })
    }

    /// Serves `routes` beside the API (before [`Server::run`]).
    pub fn add_routes(&mut self, routes: Router<AppState>) {
        let extra = std::mem::take(&mut self.extra);
        self.extra = extra.merge(routes);
    }

    /// The bound TCP address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listeners.local_addr()
    }

    /// The store the server serves (for roles running in the same process).
    pub fn objects(&self) -> &Objects {
        self.state.objects()
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
    let app = router_with(state.clone(), extra);
    let token = state.inner.shutdown.clone();
    let trigger = {
        let state = state.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections, ending watches");
            state.begin_shutdown();
        })
    };
    let tcp = axum::serve(listeners.tcp, app.clone())
        .with_graceful_shutdown(token.clone().cancelled_owned());
    let result = match listeners.unix {
        Some((unix, path)) => {
            let uds =
                axum::serve(unix, app).with_graceful_shutdown(token.clone().cancelled_owned());
            let (a, b) = tokio::join!(tcp, uds);
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), "removing the socket: {e}");
            }
            a.and(b)
        }
        None => tcp.await,
    };
    trigger.abort();
    result.map_err(ServeError::Serve)
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
