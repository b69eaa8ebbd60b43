//! OpenAPI v3 serving: the `/openapi/v3` index and one document per group-version
//! (`/openapi/v3/api/v1`, `/openapi/v3/apis/{group}/{version}`), as [`api::openapi`] builds
//! them, serialized once at start-up.
//!
//! kubectl reads these to decide that the server validates fields itself (the PATCH
//! operation lists a `fieldValidation` parameter) and for `kubectl explain` (a schema
//! carrying `x-kubernetes-group-version-kind`). Documents are immutable for the life of
//! the process, so the `?hash=` URL is served with an ETag and `Cache-Control: immutable`.

use api::resource::ResourceDef;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// One served document.
#[derive(Debug, Clone)]
struct Document {
    bytes: Bytes,
    hash: String,
}

/// All OpenAPI v3 documents, keyed by their index path (`apis/kubevirt.io/v1`, `api/v1`).
#[derive(Debug, Clone, Default)]
pub struct OpenApi {
    docs: BTreeMap<String, Document>,
}

impl OpenApi {
    /// Serializes, once, the documents [`api::openapi`] builds for the group-versions of
    /// `resources`.
    pub fn build(resources: &[ResourceDef]) -> Self {
        let mut docs = BTreeMap::new();
        for d in resources {
            let Some(doc) = api::openapi::document(d.group, d.version) else {
                continue;
            };
            docs.entry(doc.key()).or_insert_with(|| Document {
                bytes: Bytes::from(
                    serde_json::to_vec(&doc.body).expect("a JSON value always serializes"),
                ),
                hash: doc.hash.clone(),
            });
        }
        Self { docs }
    }

    /// `GET /openapi/v3`.
    pub fn index(&self) -> Value {
        let paths: Map<String, Value> = self
            .docs
            .iter()
            .map(|(k, d)| {
                (
                    k.clone(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{k}?hash={}", d.hash)}),
                )
            })
            .collect();
        json!({"paths": paths})
    }

    /// `GET /openapi/v3/{key}[?hash=]`, honouring `If-None-Match`.
    pub fn serve(&self, key: &str, hash: Option<&str>, headers: &HeaderMap) -> Option<Response> {
        let doc = self.docs.get(key.trim_matches('/'))?;
        let etag = format!("\"{}\"", doc.hash);
        if let Some(h) = hash {
            if h != doc.hash {
                // Like kube-apiserver: send the client to the current URL.
                let location = format!("/openapi/v3/{}?hash={}", key.trim_matches('/'), doc.hash);
                return Some(
                    (
                        StatusCode::MOVED_PERMANENTLY,
                        [(header::LOCATION, location)],
                    )
                        .into_response(),
                );
            }
        }
        let cache = if hash.is_some() {
            "public, immutable, max-age=31536000"
        } else {
            "no-cache, private"
        };
        let not_modified = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
        let mut resp = if not_modified {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            (StatusCode::OK, doc.bytes.clone()).into_response()
        };
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
        if let Ok(v) = HeaderValue::from_str(&etag) {
            h.insert(header::ETAG, v);
        }
        Some(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::testing::test_resources;

    #[test]
    fn index_and_caching() {
        let o = OpenApi::build(&test_resources());
        let idx = o.index();
        let url = idx["paths"]["apis/kubevirt.io/v1"]["serverRelativeURL"]
            .as_str()
            .expect("url");
        let hash = url.split("hash=").nth(1).expect("hash");
        assert!(idx["paths"]["api/v1"].is_object());
        assert!(idx["paths"]["apis/cdi.kubevirt.io/v1beta1"].is_object());
        let r = o
            .serve("apis/kubevirt.io/v1", Some(hash), &HeaderMap::new())
            .expect("doc");
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers()[header::CACHE_CONTROL]
            .to_str()
            .expect("cc")
            .contains("immutable"));
        let etag = r.headers()[header::ETAG].clone();
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(
            o.serve("apis/kubevirt.io/v1", Some(hash), &h)
                .expect("doc")
                .status(),
            StatusCode::NOT_MODIFIED
        );
        assert_eq!(
            o.serve("apis/kubevirt.io/v1", Some("stale"), &HeaderMap::new())
                .expect("doc")
                .status(),
            StatusCode::MOVED_PERMANENTLY
        );
        let plain = o
            .serve("/apis/kubevirt.io/v1", None, &HeaderMap::new())
            .expect("doc");
        assert!(plain.headers()[header::CACHE_CONTROL]
            .to_str()
            .expect("cc")
            .contains("no-cache"));
        assert!(o.serve("apis/nope/v1", None, &HeaderMap::new()).is_none());
    }
}
