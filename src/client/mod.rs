//! The client: the one way roles (controllers, scheduler, node agents, the CLI) read, watch
//! and write API objects, modelled on kube-rs's `Api<K>`.
//!
//! A [`Client`] is either in-process ([`Client::local`]: calls the store's [`Objects`]
//! after the same request checks the HTTP path runs) or remote ([`Client::http`]: the REST
//! API over TCP or the daemon's Unix socket). [`Api<K>`] is the typed view of one resource
//! in one namespace (or all); callers cannot tell the transports apart.
//!
//! - [`local`]: the in-process transport;
//! - [`http`]: the HTTP transport (hyper, pooled keep-alive connections, streamed watches);
//! - [`tls`]: its TLS (rustls) for `https://` servers.
//!
//! ```no_run
//! # async fn demo(objects: monovirt::store::Objects, def: &'static api::resource::ResourceDef)
//! #     -> Result<(), monovirt::client::ClientError> {
//! use futures_util::StreamExt;
//! use monovirt::client::{Api, Client, Event};
//! use monovirt::store::ListOptions;
//! let client = Client::local(objects);
//! let vms: Api<serde_json::Value> = Api::namespaced(client, def, "default");
//! let mut events = vms.watch(&ListOptions::default()).await?;
//! while let Some(event) = events.next().await {
//!     if let Event::Added(vm) = event? { println!("{}", vm["metadata"]["name"]); }
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
// `ApiError` (160 bytes) is the API machinery's one error type, carried unboxed.
#![allow(clippy::result_large_err)]

pub mod http;
pub mod local;
pub mod tls;

use crate::store::{
    DeleteOptions, ListOptions, Objects, Patch, WatchEvent, WatchEventType, WriteOptions,
};
use api::resource::ResourceDef;
use api::status::ApiError;
use futures_util::stream::{BoxStream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::marker::PhantomData;

/// Errors of client calls.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API answered with a `Status` (404, 409, 422, ...).
    #[error("{0}")]
    Api(ApiError),
    /// The server could not be reached or the connection failed.
    #[error("Connection to the API server failed")]
    Connect(#[source] std::io::Error),
    #[error("HTTP exchange with the API server failed")]
    Http(#[source] hyper::Error),
    /// A response or object did not decode as expected.
    #[error("Decoding a response failed")]
    Decode(#[source] serde_json::Error),
    #[error("Invalid API server address {0:?}: want http(s)://HOST:PORT or unix:PATH")]
    Endpoint(String),
    /// TLS could not be set up, or the server's certificate was not trusted.
    #[error("TLS to the API server failed")]
    Tls(#[source] Box<tls::TlsError>),
    /// The WebSocket handshake or stream failed.
    #[error("WebSocket to the API server failed")]
    WebSocket(#[source] Box<tokio_tungstenite::tungstenite::Error>),
    /// The call needs the HTTP transport (raw requests, WebSockets).
    #[error("{0} needs an HTTP client, not the in-process one")]
    Unsupported(&'static str),
}

impl From<ApiError> for ClientError {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

impl ClientError {
    /// The API error code (404, 409, ...) when the server answered with a `Status`.
    pub fn code(&self) -> Option<u16> {
        match self {
            Self::Api(e) => Some(e.code),
            _ => None,
        }
    }
}

/// The result of a list: items in `K`, plus the list metadata.
#[derive(Debug, Clone)]
pub struct List<K> {
    pub items: Vec<K>,
    pub resource_version: String,
    pub continue_token: Option<String>,
}

/// A typed watch event (kube-rs's `WatchEvent`).
#[derive(Debug, Clone)]
pub enum Event<K> {
    Added(K),
    Modified(K),
    Deleted(K),
    /// A progress marker: everything up to this resourceVersion has been sent.
    Bookmark {
        resource_version: String,
    },
    /// The server ended the watch with a `Status` (410 Expired: relist and rewatch).
    Error(ApiError),
}

/// What a transport returns from a write: the object and any `Warning`s.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub object: Value,
    pub created: bool,
    pub warnings: Vec<String>,
}

#[derive(Clone)]
enum Transport {
    Local(local::Local),
    Http(http::Http),
}

/// A connection to the API, in-process or remote. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    transport: Transport,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.transport {
            Transport::Local(_) => f.write_str("Client(local)"),
            Transport::Http(h) => write!(f, "Client({})", h.endpoint()),
        }
    }
}

impl Client {
    /// An in-process client over the store.
    pub fn local(objects: Objects) -> Self {
        Self {
            transport: Transport::Local(local::Local::new(objects)),
        }
    }

    /// A client of the REST API at `endpoint`: `http(s)://HOST:PORT` or
    /// `unix:/path/monovirt.sock` (`https://` trusts the public web roots).
    pub fn http(endpoint: &str) -> Result<Self, ClientError> {
        Self::http_with_token(endpoint, None)
    }

    /// [`Client::http`] sending `Authorization: Bearer <token>` on every request (an empty
    /// token sends none).
    pub fn http_with_token(endpoint: &str, token: Option<&str>) -> Result<Self, ClientError> {
        Self::http_with_tls(endpoint, token, &tls::TlsOptions::default())
    }

    /// [`Client::http_with_token`] trusting what `tls` says for an `https://` endpoint
    /// (ignored for `http://` and `unix:`).
    pub fn http_with_tls(
        endpoint: &str,
        token: Option<&str>,
        tls: &tls::TlsOptions,
    ) -> Result<Self, ClientError> {
        Ok(Self {
            transport: Transport::Http(http::Http::new(endpoint, token, tls)?),
        })
    }

    /// A request on any path (`/apis/...?query`) with the given `Accept`, and a body with its
    /// content type: Tables, subresources and other shapes the typed [`Api`] does not
    /// cover. A non-2xx answer is [`ClientError::Api`]. HTTP transport only.
    pub async fn request(
        &self,
        method: hyper::Method,
        path_and_query: &str,
        accept: &str,
        body: Option<(&str, bytes::Bytes)>,
    ) -> Result<http::RawResponse, ClientError> {
        match &self.transport {
            Transport::Local(_) => Err(ClientError::Unsupported("a raw request")),
            Transport::Http(h) => h.raw(method, path_and_query, accept, body).await,
        }
    }

    /// Opens a WebSocket on `path_and_query` (the console subresource). HTTP transport only.
    pub async fn websocket(&self, path_and_query: &str) -> Result<http::WebSocket, ClientError> {
        match &self.transport {
            Transport::Local(_) => Err(ClientError::Unsupported("a WebSocket")),
            Transport::Http(h) => h.websocket(path_and_query).await,
        }
    }

    async fn get(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        sub: bool,
    ) -> Result<Value, ClientError> {
        match &self.transport {
            Transport::Local(l) => l.get(def, ns, name),
            Transport::Http(h) => h.get(def, ns, name, sub).await,
        }
    }

    async fn list(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<List<Value>, ClientError> {
        match &self.transport {
            Transport::Local(l) => l.list(def, ns, opts),
            Transport::Http(h) => h.list(def, ns, opts).await,
        }
    }

    async fn create(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        obj: Value,
        opts: &WriteOptions,
    ) -> Result<Reply, ClientError> {
        match &self.transport {
            Transport::Local(l) => l.create(def, ns, obj, opts).await,
            Transport::Http(h) => h.create(def, ns, obj, opts).await,
        }
    }

    async fn update(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        obj: Value,
        opts: &WriteOptions,
    ) -> Result<Reply, ClientError> {
        match &self.transport {
            Transport::Local(l) => l.update(def, ns, name, obj, opts).await,
            Transport::Http(h) => h.update(def, ns, name, obj, opts).await,
        }
    }

    async fn patch(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        patch: Patch,
        opts: &WriteOptions,
    ) -> Result<Reply, ClientError> {
        match &self.transport {
            Transport::Local(l) => l.patch(def, ns, name, patch, opts).await,
            Transport::Http(h) => h.patch(def, ns, name, patch, opts).await,
        }
    }

    async fn delete(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<(Value, bool), ClientError> {
        match &self.transport {
            Transport::Local(l) => l.delete(def, ns, name, opts).await,
            Transport::Http(h) => h.delete(def, ns, name, opts).await,
        }
    }

    async fn watch(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<BoxStream<'static, Result<WatchEvent, ClientError>>, ClientError> {
        match &self.transport {
            Transport::Local(l) => l.watch(def, ns, opts),
            Transport::Http(h) => h.watch(def, ns, opts).await,
        }
    }
}

/// What [`Api::delete`] did.
#[derive(Debug, Clone)]
pub enum Deletion<K> {
    /// The object is gone; its last state.
    Removed(K),
    /// Finalizers keep it for now (deletionTimestamp set); its current state.
    Pending(K),
}

/// Typed access to one resource in one namespace (or across all, for list and watch).
/// `K` is any serde type of the kind, or `serde_json::Value`.
pub struct Api<K = Value> {
    client: Client,
    def: &'static ResourceDef,
    namespace: Option<String>,
    _kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Api<K> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            def: self.def,
            namespace: self.namespace.clone(),
            _kind: PhantomData,
        }
    }
}

impl<K> std::fmt::Debug for Api<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("client", &self.client)
            .field("resource", &self.def.plural)
            .field("namespace", &self.namespace)
            .finish()
    }
}

fn from_value<K: DeserializeOwned>(v: Value) -> Result<K, ClientError> {
    serde_json::from_value(v).map_err(ClientError::Decode)
}

fn to_value<K: Serialize>(k: &K) -> Result<Value, ClientError> {
    serde_json::to_value(k).map_err(ClientError::Decode)
}

impl<K: Serialize + DeserializeOwned + Send + 'static> Api<K> {
    /// Objects of a namespaced kind in `namespace`.
    pub fn namespaced(client: Client, def: &'static ResourceDef, namespace: &str) -> Self {
        Self {
            client,
            def,
            namespace: Some(namespace.to_string()),
            _kind: PhantomData,
        }
    }

    /// A cluster-scoped kind, or a namespaced kind across all namespaces (list and watch).
    pub fn all(client: Client, def: &'static ResourceDef) -> Self {
        Self {
            client,
            def,
            namespace: None,
            _kind: PhantomData,
        }
    }

    /// The resource definition.
    pub fn resource(&self) -> &'static ResourceDef {
        self.def
    }

    fn ns(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    pub async fn get(&self, name: &str) -> Result<K, ClientError> {
        from_value(self.client.get(self.def, self.ns(), name, false).await?)
    }

    /// `get`, with `None` for 404.
    pub async fn get_opt(&self, name: &str) -> Result<Option<K>, ClientError> {
        match self.get(name).await {
            Ok(k) => Ok(Some(k)),
            Err(e) if e.code() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn list(&self, opts: &ListOptions) -> Result<List<K>, ClientError> {
        let l = self.client.list(self.def, self.ns(), opts).await?;
        Ok(List {
            items: l
                .items
                .into_iter()
                .map(from_value)
                .collect::<Result<_, _>>()?,
            resource_version: l.resource_version,
            continue_token: l.continue_token,
        })
    }

    pub async fn create(&self, obj: &K, opts: &WriteOptions) -> Result<K, ClientError> {
        let r = self
            .client
            .create(self.def, self.ns(), to_value(obj)?, opts)
            .await?;
        log_warnings(&r);
        from_value(r.object)
    }

    /// PUT: replaces the object; `metadata.resourceVersion` in `obj` is a precondition.
    pub async fn replace(
        &self,
        name: &str,
        obj: &K,
        opts: &WriteOptions,
    ) -> Result<K, ClientError> {
        let r = self
            .client
            .update(self.def, self.ns(), name, to_value(obj)?, opts)
            .await?;
        log_warnings(&r);
        from_value(r.object)
    }

    /// PUT to `/status`.
    pub async fn replace_status(&self, name: &str, obj: &K) -> Result<K, ClientError> {
        let opts = WriteOptions {
            subresource: Some(crate::store::Subresource::Status),
            ..WriteOptions::default()
        };
        self.replace(name, obj, &opts).await
    }

    pub async fn patch(
        &self,
        name: &str,
        patch: Patch,
        opts: &WriteOptions,
    ) -> Result<K, ClientError> {
        let r = self
            .client
            .patch(self.def, self.ns(), name, patch, opts)
            .await?;
        log_warnings(&r);
        from_value(r.object)
    }

    /// PATCH to `/status`.
    pub async fn patch_status(&self, name: &str, patch: Patch) -> Result<K, ClientError> {
        let opts = WriteOptions {
            subresource: Some(crate::store::Subresource::Status),
            ..WriteOptions::default()
        };
        self.patch(name, patch, &opts).await
    }

    pub async fn delete(
        &self,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Deletion<K>, ClientError> {
        let (obj, removed) = self.client.delete(self.def, self.ns(), name, opts).await?;
        let k = from_value(obj)?;
        Ok(if removed {
            Deletion::Removed(k)
        } else {
            Deletion::Pending(k)
        })
    }

    /// Watches from `opts.resource_version` (unset or `0`: an ADDED per current object first).
    pub async fn watch(
        &self,
        opts: &ListOptions,
    ) -> Result<BoxStream<'static, Result<Event<K>, ClientError>>, ClientError> {
        let raw = self.client.watch(self.def, self.ns(), opts).await?;
        Ok(raw
            .map(|r| {
                let ev = r?;
                Ok(match ev.type_ {
                    WatchEventType::Added => Event::Added(from_value(ev.object)?),
                    WatchEventType::Modified => Event::Modified(from_value(ev.object)?),
                    WatchEventType::Deleted => Event::Deleted(from_value(ev.object)?),
                    WatchEventType::Bookmark => Event::Bookmark {
                        resource_version: ev.object["metadata"]["resourceVersion"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    },
                    WatchEventType::Error => Event::Error(http::error_from_status(500, &ev.object)),
                })
            })
            .boxed())
    }
}

fn log_warnings(r: &Reply) {
    for w in &r.warnings {
        tracing::warn!(created = r.created, "API warning: {w}");
    }
}
