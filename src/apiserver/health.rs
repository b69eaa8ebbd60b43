//! Health endpoints: `/livez` (the process answers), `/readyz` (it serves the API and is
//! not shutting down) and `/healthz` (the legacy union of both), plain text like
//! kube-apiserver's.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// `ok` with 200, or the failing check with 503.
pub fn report(ready: bool) -> Response {
    if ready {
        (StatusCode::OK, "ok").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "[-]shutdown failed: the server is shutting down\nreadyz check failed",
        )
            .into_response()
    }
}
