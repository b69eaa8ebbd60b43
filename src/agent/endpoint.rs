//! The node endpoint (the kubelet's :10250 role): the API server reaches a VMI's VM
//! through the agent of its node to pause, unpause and attach to its serial console.
//!
//! ```text
//! PUT /v1/namespaces/{ns}/virtualmachineinstances/{name}/pause    -> 200 | 404 | 409
//! PUT /v1/namespaces/{ns}/virtualmachineinstances/{name}/unpause  -> 200 | 404 | 409
//! GET /v1/namespaces/{ns}/virtualmachineinstances/{name}/console  -> WebSocket
//! ```
//!
//! Every request carries `Authorization: Bearer <token>` (the token the agent publishes
//! in Secret `monovirt-system/node-<node>`); errors are Kubernetes `Status` objects. The
//! console's binary frames carry raw serial bytes both ways; on connect the client first
//! gets the ring's buffered output (up to 64 KiB).

use super::domain::Domain;
use super::Agent;
use crate::vmm::{Command, CommandError};
use api::status::ApiError;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use std::sync::Arc;

const VMI_PATH: &str = "/v1/namespaces/{ns}/virtualmachineinstances/{name}";

/// The endpoint's routes over `agent`.
pub fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route(&format!("{VMI_PATH}/pause"), put(pause_or_unpause::<true>))
        .route(
            &format!("{VMI_PATH}/unpause"),
            put(pause_or_unpause::<false>),
        )
        .route(&format!("{VMI_PATH}/console"), get(console))
        .fallback(|| async {
            error(ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ))
        })
        .with_state(agent)
}

fn error(e: ApiError) -> Response {
    let code = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, Json(e.to_status())).into_response()
}

fn ok(message: &str) -> Response {
    let status = serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Success", "message": message, "code": 200});
    (StatusCode::OK, Json(status)).into_response()
}

/// Equal-time comparison, so the token cannot be guessed byte by byte from timings.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorized(agent: &Agent, headers: &HeaderMap) -> Result<(), Response> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(t) if same(t.as_bytes(), agent.token.as_bytes()) => Ok(()),
        _ => Err(error(ApiError::new(401, "Unauthorized", "Unauthorized"))),
    }
}

/// The running domain of VMI `ns/name`, for a caller presenting the agent's token: 401
/// without it, 404 when no such guest runs here.
fn domain(
    agent: &Agent,
    headers: &HeaderMap,
    ns: &str,
    name: &str,
) -> Result<Arc<Domain>, Response> {
    authorized(agent, headers)?;
    agent
        .domains
        .get(&format!("{ns}/{name}"))
        .filter(|d| d.state().exit.is_none())
        .ok_or_else(|| {
            error(ApiError::not_found(
                "kubevirt.io",
                "virtualmachineinstances",
                name,
            ))
        })
}

/// PUT .../pause (`PAUSE`) or .../unpause (not `PAUSE`).
async fn pause_or_unpause<const PAUSE: bool>(
    State(agent): State<Arc<Agent>>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    let d = match domain(&agent, &headers, &ns, &name) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let command = if PAUSE {
        Command::Pause
    } else {
        Command::Resume
    };
    match d.handle().call_async(command).await {
        Ok(()) => {
            d.state().paused = PAUSE;
            let _ = agent.keys.send(d.key.clone());
            ok(if PAUSE { "VMI paused" } else { "VMI unpaused" })
        }
        Err(CommandError::InvalidState { state, .. }) => error(ApiError::new(
            409,
            "Conflict",
            format!("VMI {name} is {state}"),
        )),
        Err(CommandError::Exited) => error(ApiError::not_found(
            "kubevirt.io",
            "virtualmachineinstances",
            &name,
        )),
        Err(e) => error(ApiError::internal(e.to_string())),
    }
}

async fn console(
    State(agent): State<Arc<Agent>>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
    ws: WebSocketUpgrade,
) -> Response {
    let d = match domain(&agent, &headers, &ns, &name) {
        Ok(d) => d,
        Err(r) => return r,
    };
    ws.on_upgrade(move |socket| stream(socket, d))
}

/// Streams the console both ways until the client leaves or the VM ends.
async fn stream(mut socket: WebSocket, d: Arc<Domain>) {
    let ring = d.console.clone();
    let mut written = ring.subscribe();
    let (first, mut pos) = ring.since(0);
    if !first.is_empty() && socket.send(Message::Binary(first.into())).await.is_err() {
        return;
    }
    let handle = d.handle();
    let exited = handle.exited();
    tokio::pin!(exited);
    loop {
        tokio::select! {
            changed = written.changed() => {
                if changed.is_err() {
                    break;
                }
                let (bytes, total) = ring.since(pos);
                pos = total;
                if !bytes.is_empty() && socket.send(Message::Binary(bytes.into())).await.is_err() {
                    return;
                }
            }
            msg = socket.recv() => match msg {
                Some(Ok(Message::Binary(b))) => { let _ = ring.send_input(&b); }
                Some(Ok(Message::Text(t))) => { let _ = ring.send_input(t.as_bytes()); }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
            },
            _ = &mut exited => {
                let (bytes, _) = ring.since(pos);
                if !bytes.is_empty() {
                    let _ = socket.send(Message::Binary(bytes.into())).await;
                }
                break;
            }
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{prepare, AgentConfig};
    use crate::client::Client;
    use crate::image::ImageStore;
    use axum::body::Body;
    use axum::http::Method;
    use tower::ServiceExt;

    #[test]
    fn token_comparison() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }

    /// An agent running no guest, over an in-process client; token "secret".
    fn agent(dir: &std::path::Path) -> Arc<Agent> {
        let client = Client::local(crate::store::Objects::in_memory().expect("store"));
        let config = AgentConfig {
            node_name: "node1".into(),
            data_dir: dir.to_path_buf(),
            listen: "127.0.0.1:0".parse().expect("address"),
            advertise: None,
            heartbeat: std::time::Duration::from_secs(10),
            server: None,
            network: None,
            vm_stats: None,
        };
        Arc::new(Agent {
            node: prepare::Node {
                images: ImageStore::open(dir).expect("image store"),
                run_dir: dir.join("run/vmis"),
                network: None,
                volumes: None,
            },
            client: client.clone(),
            vmis: Default::default(),
            domains: Default::default(),
            events: crate::controller::event::Recorder::new(client, "test"),
            token: "secret".into(),
            keys: tokio::sync::mpsc::unbounded_channel().0,
            vmi_def: api::resource::find_kind("kubevirt.io", "VirtualMachineInstance")
                .expect("the registry serves VirtualMachineInstance"),
            config,
        })
    }

    #[tokio::test]
    async fn pause_and_unpause_need_the_token_then_a_running_guest() {
        let dir = tempfile::tempdir().expect("temp dir");
        let app = router(agent(dir.path()));
        let call = |action: &str, token: Option<&str>| {
            let mut req = axum::http::Request::builder()
                .method(Method::PUT)
                .uri(format!(
                    "/v1/namespaces/default/virtualmachineinstances/vm1/{action}"
                ));
            if let Some(t) = token {
                req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
            }
            app.clone()
                .oneshot(req.body(Body::empty()).expect("request"))
        };
        for action in ["pause", "unpause"] {
            for token in [None, Some("wrong")] {
                let resp = call(action, token).await.expect("infallible");
                assert_eq!(
                    resp.status(),
                    StatusCode::UNAUTHORIZED,
                    "{action} {token:?}"
                );
            }
            let resp = call(action, Some("secret")).await.expect("infallible");
            assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{action}");
        }
    }
}
