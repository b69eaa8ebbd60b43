//! The HTTP face of [`ApiError`]: every error leaves the server as a Kubernetes `Status`
//! object with the matching HTTP code. 500 details go to the log, not to the client; a
//! 503 (a node that cannot be reached) keeps its message, which is written for clients.

use api::status::ApiError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// An [`ApiError`] on its way out as an HTTP response.
#[derive(Debug)]
pub struct HttpError(pub ApiError);

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl HttpError {
    /// 404 for a path that names no served resource (kube-apiserver's wording).
    pub fn no_route() -> Self {
        Self(ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ))
    }

    /// 405 for a verb the resource does not support.
    pub fn method_not_allowed(method: &str, what: &str) -> Self {
        Self(ApiError::new(
            405,
            "MethodNotAllowed",
            format!(
                "the server does not allow this method on the requested resource ({method} {what})"
            ),
        ))
    }

    /// 406 when the client accepts no representation we produce.
    pub fn not_acceptable(accept: &str) -> Self {
        Self(ApiError::new(
            406,
            "NotAcceptable",
            format!("only the following media types are accepted: application/json, application/yaml (requested {accept:?})"),
        ))
    }

    /// 413: the request body is over the limit.
    pub fn too_large(limit: usize) -> Self {
        Self(ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        ))
    }

    /// 415: a body media type the endpoint does not take.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self(ApiError::new(415, "UnsupportedMediaType", message))
    }
}

/// Renders `err` as a JSON `Status` response.
pub fn status_response(err: &ApiError) -> Response {
    let code = StatusCode::from_u16(err.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut status = err.clone();
    if code.is_server_error() && code != StatusCode::SERVICE_UNAVAILABLE {
        tracing::error!(code = err.code, reason = %err.reason, "request failed: {}", err.message);
        status.message = format!(
            "Internal error occurred: {} (details are in the server log)",
            err.reason
        );
    }
    let body = serde_json::to_vec(&status.to_status()).unwrap_or_default();
    let mut resp = (code, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        status_response(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn renders_status_with_code() {
        let resp =
            HttpError(ApiError::not_found("kubevirt.io", "virtualmachines", "x")).into_response();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["kind"], "Status");
        assert_eq!(v["reason"], "NotFound");
        assert_eq!(v["message"], "virtualmachines.kubevirt.io \"x\" not found");
    }

    #[tokio::test]
    async fn hides_internal_details() {
        let resp = HttpError(ApiError::internal("sled: disk on fire at /secret")).into_response();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["reason"], "InternalError");
        assert!(!v["message"].as_str().expect("message").contains("secret"));
    }
}
