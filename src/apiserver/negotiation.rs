//! Content negotiation: what the client accepts (plain JSON, a `meta.k8s.io` Table, aggregated
//! discovery) and how a request body is read (size limit, JSON or YAML).

use super::error::HttpError;
use api::status::ApiError;
use axum::body::Body;
use axum::http::{header, HeaderMap};
use serde_json::Value;

/// Request bodies over this size get 413 (kube-apiserver's limit for JSON/YAML bodies).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// The aggregated discovery v2 media type; kubectl parses `/api` and `/apis` as aggregated
/// only when the response carries exactly this Content-Type.
pub const AGGREGATED_DISCOVERY: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// One entry of an `Accept` header: `type/subtype;k=v;...`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MediaRange {
    essence: String,
    params: Vec<(String, String)>,
}

impl MediaRange {
    fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn is_json_like(&self) -> bool {
        matches!(
            self.essence.as_str(),
            "application/json" | "application/*" | "*/*"
        )
    }
}

fn parse_accept(value: &str) -> Vec<MediaRange> {
    value
        .split(',')
        .filter_map(|item| {
            let mut parts = item.split(';');
            let essence = parts.next()?.trim().to_ascii_lowercase();
            if essence.is_empty() {
                return None;
            }
            let params = parts
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    Some((
                        k.trim().to_ascii_lowercase(),
                        v.trim().trim_matches('"').to_string(),
                    ))
                })
                .collect();
            Some(MediaRange { essence, params })
        })
        .collect()
}

/// What the response should be, from the request's `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Representation {
    /// The object or list as JSON.
    #[default]
    Json,
    /// A `meta.k8s.io/v1` (or `v1beta1`) Table.
    Table { v1beta1: bool },
}

/// The parsed `Accept` header.
#[derive(Debug, Clone, Default)]
pub struct Accept {
    ranges: Vec<MediaRange>,
    raw: String,
}

impl Accept {
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let raw = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",");
        Self {
            ranges: parse_accept(&raw),
            raw,
        }
    }

    /// Whether the client asks for aggregated discovery v2 (`as=APIGroupDiscoveryList`).
    pub fn wants_aggregated_discovery(&self) -> bool {
        self.ranges.iter().any(|r| {
            r.essence == "application/json"
                && r.param("as") == Some("APIGroupDiscoveryList")
                && r.param("g") == Some("apidiscovery.k8s.io")
                && r.param("v") == Some("v2")
        })
    }

    /// Table if the client lists a Table media type before any plain one it also takes,
    /// JSON if it takes JSON at all, else 406.
    pub fn representation(&self) -> Result<Representation, HttpError> {
        if self.ranges.is_empty() {
            return Ok(Representation::Json);
        }
        for r in &self.ranges {
            if r.essence == "application/json"
                && r.param("as") == Some("Table")
                && r.param("g") == Some("meta.k8s.io")
            {
                match r.param("v") {
                    Some("v1") => return Ok(Representation::Table { v1beta1: false }),
                    Some("v1beta1") => return Ok(Representation::Table { v1beta1: true }),
                    _ => continue,
                }
            }
            // Skip other `as=` kinds (PartialObjectMetadata, ...) we do not produce.
            if r.is_json_like() && r.param("as").is_none() {
                return Ok(Representation::Json);
            }
        }
        Err(HttpError::not_acceptable(&self.raw))
    }
}

/// The essence of the request's `Content-Type` (`application/json`), lower case.
pub fn content_type(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        v.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase(),
    )
}

/// Reads the whole body, refusing more than [`MAX_BODY_BYTES`] with 413.
pub async fn read_body(body: Body) -> Result<bytes::Bytes, HttpError> {
    match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => Ok(b),
        Err(e) => {
            // `to_bytes` reports the limit through a `LengthLimitError` source.
            let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(s) = src {
                if s.is::<http_body_util::LengthLimitError>() {
                    return Err(HttpError::too_large(MAX_BODY_BYTES));
                }
                src = s.source();
            }
            Err(HttpError(ApiError::bad_request(format!(
                "error reading request body: {e}"
            ))))
        }
    }
}

/// Decodes a JSON or YAML body into a JSON value. JSON is tried first whatever the
/// Content-Type says when the body looks like JSON (kubectl sends JSON as apply-patch+yaml).
pub fn decode(bytes: &[u8], yaml: bool) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    let looks_json = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{' || *b == b'[');
    if !yaml || looks_json {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(v) => return Ok(v),
            Err(e) if !yaml => {
                return Err(ApiError::bad_request(format!(
                    "error decoding JSON request body: {e}"
                )))
            }
            Err(_) => {}
        }
    }
    let v: Value = serde_yaml_ng::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML request body: {e}")))?;
    Ok(v)
}

/// Whether a Content-Type names YAML.
pub fn is_yaml(content_type: Option<&str>) -> bool {
    matches!(
        content_type,
        Some(
            "application/yaml"
                | "application/x-yaml"
                | "text/yaml"
                | "application/apply-patch+yaml"
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn accept(v: &str) -> Accept {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).expect("header"));
        Accept::from_headers(&h)
    }

    #[test]
    fn kubectl_table_accept() {
        let a = accept("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json");
        assert_eq!(
            a.representation().expect("ok"),
            Representation::Table { v1beta1: false }
        );
    }

    #[test]
    fn plain_and_protobuf_first_get_json() {
        assert_eq!(
            accept("application/json").representation().expect("ok"),
            Representation::Json
        );
        assert_eq!(
            accept("application/vnd.kubernetes.protobuf,application/json")
                .representation()
                .expect("ok"),
            Representation::Json
        );
        assert_eq!(
            accept("*/*").representation().expect("ok"),
            Representation::Json
        );
        assert!(accept("application/vnd.kubernetes.protobuf")
            .representation()
            .is_err());
    }

    #[test]
    fn aggregated_discovery_detection() {
        let a = accept("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json");
        assert!(a.wants_aggregated_discovery());
        assert!(!accept("application/json, */*").wants_aggregated_discovery());
        assert!(!accept(
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
        )
        .wants_aggregated_discovery());
    }

    #[test]
    fn decodes_json_and_yaml() {
        assert_eq!(decode(br#"{"a":1}"#, false).expect("json")["a"], 1);
        assert_eq!(decode(b"a: 1\nb: [x]\n", true).expect("yaml")["b"][0], "x");
        assert_eq!(decode(br#"{"a":1}"#, true).expect("json as yaml")["a"], 1);
        let e = decode(b"{not json", false).expect_err("bad");
        assert_eq!(e.code, 400);
        assert_eq!(decode(b"  ", false).expect_err("empty").code, 400);
        assert_eq!(decode(b"a: [", true).expect_err("bad yaml").code, 400);
    }
}
