//! Uploads (CDI's upload proxy and upload server roles): a claim annotated as an upload
//! target waits in [`Uploads`]; an `UploadTokenRequest` for it
//! (`POST /apis/upload.cdi.kubevirt.io/v1beta1/namespaces/{ns}/uploadtokenrequests`)
//! answers a short-lived token; `POST /v1beta1/upload` (or `/v1beta1/upload-async`) with
//! `Authorization: Bearer <token>` streams the image bytes through the import pipeline into
//! the claim. `monovirt image-upload` drives both.

use super::import::{self, ImportError, Imported, Progress, Target};
use crate::client::{Api, Client};
use axum::body::Body;
use axum::extract::{Path as AxPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures_util::TryStreamExt;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How long an upload token is valid (CDI's is 5 minutes).
pub const TOKEN_TTL: Duration = Duration::from_secs(300);
/// The API group of UploadTokenRequest.
pub const GROUP: &str = "upload.cdi.kubevirt.io";

/// Errors of an upload.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("The upload token is missing, invalid or expired")]
    Token,
    #[error("Claim {0} is not waiting for an upload (not an upload target, not bound yet, or already uploaded)")]
    NotReady(String),
    #[error("An upload to claim {0} is already in progress")]
    Busy(String),
    #[error("The upload was abandoned")]
    Abandoned,
}

struct Slot {
    target: Target,
    progress: Arc<Progress>,
    done: Option<oneshot::Sender<Result<Imported, ImportError>>>,
    /// The other end of `done`, until [`Uploads::wait`] takes it.
    result: Option<oneshot::Receiver<Result<Imported, ImportError>>>,
}

/// What an upload takes from a waiting claim: its key, target, progress and the channel
/// the result goes back on.
type Taken = (
    String,
    Target,
    Arc<Progress>,
    oneshot::Sender<Result<Imported, ImportError>>,
);

struct Token {
    key: String,
    expires: Instant,
}

#[derive(Default)]
struct Inner {
    tokens: HashMap<String, Token>,
    slots: HashMap<String, Slot>,
}

/// Upload tokens and the claims waiting for uploads. Cheap to clone.
#[derive(Clone, Default)]
pub struct Uploads {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for Uploads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Uploads")
    }
}

impl Uploads {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new token for uploading into claim `namespace/name`.
    pub fn issue(&self, key: &str) -> String {
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let mut inner = self.lock();
        let now = Instant::now();
        inner.tokens.retain(|_, t| t.expires > now);
        inner.tokens.insert(
            token.clone(),
            Token {
                key: key.to_string(),
                expires: now + TOKEN_TTL,
            },
        );
        token
    }

    /// Whether claim `key` waits for an upload.
    pub fn is_waiting(&self, key: &str) -> bool {
        self.lock().slots.get(key).is_some_and(|s| s.done.is_some())
    }

    /// Opens claim `key` for one upload. The populator opens it before the claim says it is
    /// ready for data, so an uploader that posts as soon as it sees that finds it open.
    pub fn open(&self, key: &str, target: Target, progress: Arc<Progress>) {
        let (tx, rx) = oneshot::channel();
        self.lock().slots.insert(
            key.to_string(),
            Slot {
                target,
                progress,
                done: Some(tx),
                result: Some(rx),
            },
        );
    }

    /// Waits (the populator) until an upload into claim `key` finished and returns its
    /// result; opens the claim first unless [`Uploads::open`] did.
    pub async fn wait(
        &self,
        key: &str,
        target: Target,
        progress: Arc<Progress>,
    ) -> Result<Imported, ImportError> {
        let rx = {
            let mut inner = self.lock();
            match inner.slots.get_mut(key).and_then(|s| s.result.take()) {
                Some(rx) => rx,
                None => {
                    let (tx, rx) = oneshot::channel();
                    inner.slots.insert(
                        key.to_string(),
                        Slot {
                            target,
                            progress,
                            done: Some(tx),
                            result: None,
                        },
                    );
                    rx
                }
            }
        };
        let r = rx.await;
        self.close(key);
        r.unwrap_or_else(|_| {
            Err(ImportError::Source(std::io::Error::other(
                UploadError::Abandoned,
            )))
        })
    }

    /// Forgets claim `key`'s slot (its population was cancelled).
    pub fn close(&self, key: &str) {
        self.lock().slots.remove(key);
    }

    /// Takes claim `key`'s slot for one upload.
    fn take(&self, token: &str) -> Result<Taken, UploadError> {
        let mut inner = self.lock();
        let key = inner
            .tokens
            .get(token)
            .filter(|t| t.expires > Instant::now())
            .map(|t| t.key.clone())
            .ok_or(UploadError::Token)?;
        let slot = inner
            .slots
            .get_mut(&key)
            .ok_or_else(|| UploadError::NotReady(key.clone()))?;
        let done = slot
            .done
            .take()
            .ok_or_else(|| UploadError::Busy(key.clone()))?;
        Ok((key, slot.target.clone(), slot.progress.clone(), done))
    }
}

/// What the upload routes need.
#[derive(Clone, Debug)]
pub struct UploadState {
    pub uploads: Uploads,
    pub client: Client,
}

/// The routes: UploadTokenRequest creation and the upload endpoints.
pub fn routes<S: Clone + Send + Sync + 'static>(state: UploadState) -> Router<S> {
    Router::new()
        .route(
            "/apis/upload.cdi.kubevirt.io/v1beta1/namespaces/{ns}/uploadtokenrequests",
            post(token_request),
        )
        .route("/v1beta1/upload", post(upload))
        .route("/v1beta1/upload-async", post(upload))
        .with_state(state)
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16()});
    (code, axum::Json(body)).into_response()
}

async fn token_request(
    State(st): State<UploadState>,
    AxPath(ns): AxPath<String>,
    body: axum::body::Bytes,
) -> Response {
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("invalid UploadTokenRequest: {e}"),
            )
        }
    };
    let Some(pvc) = req
        .pointer("/spec/pvcName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    else {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "spec.pvcName: Required value",
        );
    };
    let Some(def) = api::resource::find_kind("", "PersistentVolumeClaim") else {
        return status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "PVCs are not served",
        );
    };
    let claims: Api<Value> = Api::namespaced(st.client.clone(), def, &ns);
    match claims.get_opt(pvc).await {
        Ok(Some(c))
            if c.pointer(&format!(
                "/metadata/annotations/{}",
                super::annotation::UPLOAD_REQUEST.replace('/', "~1")
            ))
            .is_some() => {}
        Ok(Some(_)) => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("PVC {pvc} is not an upload target"),
            )
        }
        Ok(None) => {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("persistentvolumeclaims \"{pvc}\" not found"),
            )
        }
        Err(e) => {
            return status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                &e.to_string(),
            )
        }
    }
    let token = st.uploads.issue(&format!("{ns}/{pvc}"));
    let mut out = req.clone();
    out["apiVersion"] = json!("upload.cdi.kubevirt.io/v1beta1");
    out["kind"] = json!("UploadTokenRequest");
    out["metadata"]["namespace"] = json!(ns);
    out["status"] = json!({"token": token});
    (StatusCode::CREATED, axum::Json(out)).into_response()
}

async fn upload(State(st): State<UploadState>, headers: HeaderMap, body: Body) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let (key, target, progress, done) = match st.uploads.take(token) {
        Ok(t) => t,
        Err(e @ UploadError::Token) => {
            return status(StatusCode::UNAUTHORIZED, "Unauthorized", &e.to_string())
        }
        Err(e @ UploadError::Busy(_)) => {
            return status(StatusCode::CONFLICT, "Conflict", &e.to_string())
        }
        Err(e) => {
            return status(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                &e.to_string(),
            )
        }
    };
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    progress.set_total(length);
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let reader = tokio_util::io::StreamReader::new(stream);
    let result = import::import(reader, &target, None, progress).await;
    let response = match &result {
        Ok(i) => (
            StatusCode::OK,
            format!(
                "Uploaded {} bytes ({} image) into {key}\n",
                i.transferred, i.format
            ),
        )
            .into_response(),
        Err(e) if e.retryable() => status(StatusCode::BAD_GATEWAY, "UploadFailed", &e.to_string()),
        Err(e) => status(StatusCode::BAD_REQUEST, "UploadFailed", &e.to_string()),
    };
    let _ = done.send(result);
    response
}
