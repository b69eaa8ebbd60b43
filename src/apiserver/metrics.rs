//! Request metrics in Prometheus' text format (OpenMetrics):
//! `apiserver_request_total{verb,resource,code}` and the
//! `apiserver_request_duration_seconds{verb,resource}` histogram, recorded by a middleware
//! around every request.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Instant;

/// What a resource handler tells the metrics layer about the request it served,
/// through the response's extensions.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: &'static str,
    /// The plural, with `/status` for the subresource.
    pub resource: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CountLabels {
    verb: String,
    resource: String,
    code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    verb: String,
    resource: String,
}

type HistogramFamily = Family<DurationLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // kube-apiserver's buckets, trimmed: 5 ms .. 60 s.
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
    ])
}

/// The server's request metrics and their registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    requests: Family<CountLabels, Counter>,
    duration: HistogramFamily,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<CountLabels, Counter>::default();
        let duration: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "apiserver_request",
            "Counter of apiserver requests broken out by verb, resource and HTTP response code",
            requests.clone(),
        );
        registry.register(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb and resource (for watches: until the stream starts)",
            duration.clone(),
        );
        Self {
            registry: Arc::new(registry),
            requests,
            duration,
        }
    }

    fn observe(&self, verb: &str, resource: &str, code: u16, seconds: f64) {
        self.requests
            .get_or_create(&CountLabels {
                verb: verb.to_string(),
                resource: resource.to_string(),
                code: code.to_string(),
            })
            .inc();
        self.duration
            .get_or_create(&DurationLabels {
                verb: verb.to_string(),
                resource: resource.to_string(),
            })
            .observe(seconds);
    }

    /// The exposition in OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// `GET /metrics`: OpenMetrics when the scraper asks for it (Prometheus does),
    /// else Prometheus' classic text format (curl, promtool).
    pub fn response(&self, headers: &axum::http::HeaderMap, extra: &str) -> Response {
        let open = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("application/openmetrics-text"));
        let mut text = self.encode();
        // Further families (the VMIs') go before the closing `# EOF`.
        if let Some(at) = text.rfind("# EOF") {
            text.insert_str(at, extra);
        } else {
            text.push_str(extra);
        }
        let (body, content_type) = if open {
            (
                text,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
        } else {
            (
                classic_text(&text),
                "text/plain; version=0.0.4; charset=utf-8",
            )
        };
        let mut resp = body.into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        resp
    }
}

/// OpenMetrics text as Prometheus' classic text format (0.0.4): counters' HELP and
/// TYPE lines name the `_total` series, and `# UNIT` and `# EOF` go.
pub fn classic_text(open: &str) -> String {
    let mut out = String::with_capacity(open.len());
    let mut help: Option<(&str, &str)> = None;
    for line in open.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some((name, text)) = help.take() {
                // A HELP without a TYPE: keep it as it was.
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let name = if kind == "counter" && !name.ends_with("_total") {
                format!("{name}_total")
            } else {
                name.to_string()
            };
            if let Some((_, text)) = help.take() {
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn method_verb(m: &Method) -> &'static str {
    match *m {
        Method::GET => "get",
        Method::POST => "post",
        Method::PUT => "put",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        Method::HEAD => "head",
        Method::OPTIONS => "options",
        _ => "other",
    }
}

/// Middleware: counts and times every request. Resource handlers label it through
/// [`RequestInfo`]; other paths are counted under their HTTP method and an empty resource.
pub async fn track(State(metrics): State<Metrics>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = method_verb(req.method());
    let resp = next.run(req).await;
    let (verb, resource) = match resp.extensions().get::<RequestInfo>() {
        Some(i) => (i.verb, i.resource.as_str()),
        None => (method, ""),
    };
    metrics.observe(
        verb,
        resource,
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names() {
        let m = Metrics::new();
        m.observe("get", "virtualmachines", 200, 0.003);
        let text = m.encode();
        assert!(
            text.contains(
                r#"apiserver_request_total{verb="get",resource="virtualmachines",code="200"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains("apiserver_request_duration_seconds_bucket"),
            "{text}"
        );
        let classic = classic_text(&text);
        assert!(
            classic.contains("# TYPE apiserver_request_total counter\n"),
            "{classic}"
        );
        assert!(
            classic.contains("# HELP apiserver_request_total Counter of"),
            "{classic}"
        );
        assert!(!classic.contains("# EOF"), "{classic}");
    }
}
