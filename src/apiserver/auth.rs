//! Authentication and authorisation in front of every route, per listener:
//!
//! - the Unix socket (mode 0600, root's) and plain-HTTP loopback listeners are trusted:
//!   their callers act as `admin` (`system:unix-socket`, `system:loopback`). Loopback
//!   HTTP is the zero-config development default; the installed configuration serves
//!   only HTTPS and the socket;
//! - HTTPS listeners take `Authorization: Bearer <token>` (see [`crate::auth::token`]):
//!   a missing, malformed, unknown, revoked or expired token gets 401, a request its
//!   grant does not allow 403, both as `Status` objects with kube-apiserver's wording.
//!   `/healthz`, `/livez`, `/readyz` and `/version` answer without a token. CDI's upload
//!   endpoints carry their own credential (an upload token, checked by
//!   [`crate::storage::upload`]), so no API token is asked of them.
//!
//! Every mutating request and every refused one is written to the [`AuditLog`].

use super::audit::AuditLog;
use super::error::status_response;
use crate::auth::request::Attributes;
use crate::auth::token::{Identity, Rejection};
use crate::auth::{Grant, Tokens};
use api::status::{ApiError, Details};
use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;

/// The token store and audit log the listeners share.
#[derive(Debug)]
pub struct Security {
    pub tokens: Tokens,
    pub audit: Option<AuditLog>,
}

/// How a listener's callers are identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// Every caller is this admin user (the Unix socket, loopback HTTP).
    Local(&'static str),
    /// Callers present bearer tokens.
    Tokens,
}

/// The middleware's state: the shared security pieces and this listener's trust.
#[derive(Debug, Clone)]
pub struct Gate {
    pub security: Option<Arc<Security>>,
    pub trust: Trust,
}

const PUBLIC: [&str; 4] = ["/healthz", "/livez", "/readyz", "/version"];
/// Paths whose handler authenticates the caller itself: the upload proxy's
/// `Authorization: Bearer` is an upload token, not an API token.
const OWN_AUTH: [&str; 2] = ["/v1beta1/upload", "/v1beta1/upload-async"];

fn unauthorized() -> ApiError {
    ApiError::new(401, "Unauthorized", "Unauthorized")
}

/// kube-apiserver's 403 wording.
fn forbidden(user: &str, attrs: &Attributes) -> ApiError {
    match attrs {
        Attributes::NonResource { path, verb } => ApiError::new(
            403,
            "Forbidden",
            format!("forbidden: User \"{user}\" cannot {verb} path \"{path}\""),
        ),
        Attributes::Resource(r) => {
            let full = match &r.subresource {
                Some(s) => format!("{}/{s}", r.resource),
                None => r.resource.clone(),
            };
            let qualified = if r.group.is_empty() {
                r.resource.clone()
            } else {
                format!("{}.{}", r.resource, r.group)
            };
            let subject = match &r.name {
                Some(n) => format!("{qualified} \"{n}\" is forbidden"),
                None => format!("{qualified} is forbidden"),
            };
            let scope = match &r.namespace {
                Some(ns) => format!(" in the namespace \"{ns}\""),
                None => " at the cluster scope".to_string(),
            };
            let mut e = ApiError::new(
                403,
                "Forbidden",
                format!(
                    "{subject}: User \"{user}\" cannot {} resource \"{full}\" in API group \"{}\"{scope}",
                    r.verb, r.group
                ),
            );
            e.details = Some(Details {
                name: r.name.clone(),
                group: Some(r.group.clone()).filter(|g| !g.is_empty()),
                kind: Some(r.resource.clone()),
                ..Details::default()
            });
            e
        }
    }
}

fn bearer(req: &Request) -> Option<&str> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The middleware.
pub async fn gate(State(gate): State<Gate>, mut req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let attrs = Attributes::from_request(&method, uri.path(), uri.query());
    let public = matches!(&attrs, Attributes::NonResource { path, verb: "get" } if PUBLIC.contains(&path.as_str()));
    let mutating = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    let audit = |user: &str, code: u16| {
        if let Some(log) = gate.security.as_ref().and_then(|s| s.audit.as_ref()) {
            log.record(user, method.as_str(), &uri.to_string(), &attrs, code);
        }
    };
    if gate.trust == Trust::Tokens && OWN_AUTH.contains(&uri.path()) {
        let resp = next.run(req).await;
        audit("system:cdi-upload", resp.status().as_u16());
        return resp;
    }
    let identity: Result<Identity, Rejection> = match gate.trust {
        Trust::Local(user) => Ok(Identity {
            user: user.to_string(),
            grant: Grant::ADMIN,
        }),
        Trust::Tokens => match (bearer(&req), gate.security.as_ref()) {
            (Some(token), Some(sec)) => sec.tokens.authenticate(token),
            (Some(_), None) => Err(Rejection::Unavailable),
            (None, _) => Err(Rejection::Malformed),
        },
    };
    let identity = match identity {
        Ok(id) => id,
        Err(_) if public => return next.run(req).await,
        Err(why) => {
            tracing::debug!(%method, %uri, "unauthenticated request: {why}");
            audit("system:anonymous", 401);
            return status_response(&unauthorized());
        }
    };
    if !identity.grant.allows(&attrs) {
        audit(&identity.user, 403);
        return status_response(&forbidden(&identity.user, &attrs));
    }
    req.extensions_mut().insert(identity.clone());
    let resp = next.run(req).await;
    if mutating {
        audit(&identity.user, resp.status().as_u16());
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;
    use axum::body::Body;
    use axum::routing::any;
    use axum::Router;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn app(gate: Gate) -> Router {
        Router::new()
            .route("/{*p}", any(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(gate, super::gate))
    }

    async fn call(
        app: &Router,
        m: Method,
        path: &str,
        token: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let mut b = axum::http::Request::builder().method(m).uri(path);
        if let Some(t) = token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let resp = app
            .clone()
            .oneshot(b.body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let code = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let v = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        (code, v)
    }

    #[tokio::test]
    async fn tokens_roles_and_the_audit_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens = Tokens::in_data_dir(dir.path());
        let (view, _) = tokens
            .issue(
                Grant::User {
                    role: Role::View,
                    namespace: None,
                },
                None,
                "",
            )
            .expect("issue");
        let (edit_ns, rec) = tokens
            .issue(
                Grant::User {
                    role: Role::Edit,
                    namespace: Some("default".into()),
                },
                None,
                "",
            )
            .expect("issue");
        let security = Arc::new(Security {
            tokens,
            audit: Some(AuditLog::open(&dir.path().join("audit.log")).expect("audit")),
        });
        let a = app(Gate {
            security: Some(security.clone()),
            trust: Trust::Tokens,
        });
        let vms = "/apis/kubevirt.io/v1/namespaces/default/virtualmachines";
        let (code, v) = call(&a, Method::GET, vms, None).await;
        assert_eq!((code, v["reason"].as_str()), (401, Some("Unauthorized")));
        assert_eq!(v["kind"], "Status");
        assert_eq!(call(&a, Method::GET, vms, Some("abcdef.nope")).await.0, 401);
        assert_eq!(call(&a, Method::GET, "/readyz", None).await.0, 200);
        assert_eq!(call(&a, Method::GET, vms, Some(&view)).await.0, 200);
        let (code, v) = call(&a, Method::POST, vms, Some(&view)).await;
        assert_eq!(code, 403);
        assert_eq!(v["reason"], "Forbidden");
        assert_eq!(v["details"]["kind"], "virtualmachines");
        assert!(v["message"].as_str().expect("message").contains("cannot create resource \"virtualmachines\" in API group \"kubevirt.io\" in the namespace \"default\""), "{v}");
        assert_eq!(call(&a, Method::POST, vms, Some(&edit_ns)).await.0, 200);
        let other = "/apis/kubevirt.io/v1/namespaces/other/virtualmachines";
        assert_eq!(call(&a, Method::POST, other, Some(&edit_ns)).await.0, 403);
        security.tokens.revoke(&rec.id).expect("revoke");
        assert_eq!(call(&a, Method::POST, vms, Some(&edit_ns)).await.0, 401);

        let log = std::fs::read_to_string(dir.path().join("audit.log")).expect("log");
        let lines: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect();
        // 401 x2 (GETs are refused, so audited), 403 POST, 200 POST, 403 POST, 401 POST.
        let codes: Vec<u64> = lines
            .iter()
            .map(|l| l["code"].as_u64().expect("code"))
            .collect();
        assert_eq!(codes, vec![401, 401, 403, 200, 403, 401]);
        assert_eq!(lines[3]["user"], format!("token:{}", rec.id));
        assert_eq!(lines[3]["verb"], "create");
        assert_eq!(lines[3]["namespace"], "default");
    }

    #[tokio::test]
    async fn trusted_listeners_need_no_token() {
        let a = app(Gate {
            security: None,
            trust: Trust::Local("system:unix-socket"),
        });
        assert_eq!(
            call(&a, Method::DELETE, "/api/v1/nodes/n1", None).await.0,
            200
        );
        let b = app(Gate {
            security: None,
            trust: Trust::Tokens,
        });
        assert_eq!(
            call(&b, Method::GET, "/api/v1/nodes", Some("abcdef.x"))
                .await
                .0,
            401
        );
    }

    #[tokio::test]
    async fn upload_endpoints_check_their_own_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let security = Arc::new(Security {
            tokens: Tokens::in_data_dir(dir.path()),
            audit: Some(AuditLog::open(&dir.path().join("audit.log")).expect("audit")),
        });
        let a = app(Gate {
            security: Some(security),
            trust: Trust::Tokens,
        });
        // The handler (here: "ok") sees the request whatever its bearer is...
        for path in ["/v1beta1/upload", "/v1beta1/upload-async"] {
            assert_eq!(
                call(&a, Method::POST, path, Some("upload.tok")).await.0,
                200
            );
        }
        // ...but only on those exact paths.
        for path in [
            "/v1beta1/uploadx",
            "/v1beta1/upload/x",
            "/apis/v1beta1/upload",
        ] {
            assert_eq!(
                call(&a, Method::POST, path, Some("upload.tok")).await.0,
                401
            );
        }
        let log = std::fs::read_to_string(dir.path().join("audit.log")).expect("log");
        assert_eq!(log.matches("system:cdi-upload").count(), 2, "{log}");
    }
}
