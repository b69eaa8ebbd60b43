//! The VMI subresources (pause, unpause, console) through the API server to a node
//! endpoint: here a test double on loopback that implements the node endpoint contract
//! (bearer token, Status errors, console WebSocket with its buffered output first, an echo
//! of every input frame), so the API server's checks, node lookup, token, proxying and
//! WebSocket bridging are proven without a running guest. The CLI drives it as a user would.

mod common;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use common::api::{get as http_get, patch, post, TestServer, VMIS};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOKEN: &str = "node-token-1";
/// What the double's console "guest" printed before the client connected.
const RING: &[u8] = b"guest ready\r\n";

/// The node endpoint double: what it was asked, and the VMIs it knows.
#[derive(Default)]
struct Double {
    calls: Mutex<Vec<String>>,
}

type Shared = Arc<Double>;

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": message, "reason": reason, "code": code});
    (StatusCode::from_u16(code).expect("code"), Json(body)).into_response()
}

fn authorized(h: &HeaderMap) -> bool {
    h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
}

async fn action(
    State(d): State<Shared>,
    Path((ns, name, action)): Path<(String, String, String)>,
    h: HeaderMap,
) -> Response {
    if !authorized(&h) {
        return status(401, "Unauthorized", "Unauthorized");
    }
    if name != "vm1" {
        return status(404, "NotFound", "no such VM on this node");
    }
    d.calls
        .lock()
        .expect("lock")
        .push(format!("{action} {ns}/{name}"));
    status(200, "", "")
}

async fn console(
    State(d): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    h: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !authorized(&h) {
        return status(401, "Unauthorized", "Unauthorized");
    }
    d.calls
        .lock()
        .expect("lock")
        .push(format!("console {ns}/{name}"));
    ws.on_upgrade(|mut socket: WebSocket| async move {
        if socket
            .send(Message::Binary(bytes::Bytes::from_static(RING)))
            .await
            .is_err()
        {
            return;
        }
        while let Some(Ok(m)) = socket.recv().await {
            match m {
                Message::Binary(b) => {
                    let mut out = b"echo:".to_vec();
                    out.extend_from_slice(&b);
                    if socket.send(Message::Binary(out.into())).await.is_err() {
                        return;
                    }
                }
                Message::Close(_) => return,
                _ => {}
            }
        }
    })
}

/// Serves the double on 127.0.0.1:0 on its own runtime thread.
fn start_double() -> (SocketAddr, Shared) {
    let d: Shared = Arc::default();
    let app = Router::new()
        .route(
            "/v1/namespaces/{ns}/virtualmachineinstances/{name}/console",
            get(console),
        )
        .route(
            "/v1/namespaces/{ns}/virtualmachineinstances/{name}/{action}",
            put(action),
        )
        .with_state(d.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(l.local_addr().expect("addr")).expect("send");
            axum::serve(l, app).await.expect("serve");
        });
    });
    (rx.recv().expect("double started"), d)
}

/// A free loopback port with nothing listening (bound, then closed).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn node(name: &str, port: u16) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
           "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                      "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}})
}

async fn create(addr: SocketAddr, path: &str, obj: Value) {
    let r = post(addr, path, &obj).await;
    assert_eq!(r.code(), 201, "{path}: {}", r.text());
}

/// Sets the status of VMI `name` (phase, node, conditions).
async fn set_vmi_status(addr: SocketAddr, name: &str, status: Value) {
    let r = patch(
        addr,
        &format!("{VMIS}/{name}/status"),
        "application/merge-patch+json",
        &json!({"status": status}).to_string(),
    )
    .await;
    assert_eq!(r.code(), 200, "{}", r.text());
}

/// A running VMI on node `n1`, that node at `port`, its token Secret.
async fn cluster(addr: SocketAddr, port: u16, token: &str) {
    create(
        addr,
        "/api/v1/namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "monovirt-system"}}),
    )
    .await;
    create(addr, "/api/v1/nodes", node("n1", port)).await;
    create(
        addr,
        "/api/v1/namespaces/monovirt-system/secrets",
        json!({"apiVersion": "v1",
        "kind": "Secret", "metadata": {"name": "node-n1", "namespace": "monovirt-system"},
        "stringData": {"token": token}}),
    )
    .await;
    for name in ["vm1", "other"] {
        create(
            addr,
            VMIS,
            json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": name},
            "spec": {"domain": {"devices": {}, "resources": {"requests": {"memory": "64Mi"}}}}}),
        )
        .await;
        set_vmi_status(addr, name, json!({"phase": "Running", "nodeName": "n1"})).await;
    }
}

/// `monovirt ARGS --server URL` run to its end: (exit code, stdout, stderr).
async fn cli(server: &str, args: &[&str]) -> (i32, String, String) {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.extend(["--server".to_string(), server.to_string()]);
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_monovirt"))
            .args(&all)
            .env_remove("MONOVIRT_SERVER")
            .stdin(Stdio::null())
            .output()
            .expect("run monovirt");
        (
            out.status.code().expect("exited"),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).trim_end().to_string(),
        )
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_unpause_through_the_node_endpoint() {
    let s = TestServer::start();
    let (double, calls) = start_double();
    cluster(s.addr, double.port(), TOKEN).await;
    let server = s.base();

    let r = cli(&server, &["pause", "vmi", "vm1"]).await;
    assert_eq!(
        r,
        (0, "VMI vm1 was scheduled to pause\n".into(), String::new())
    );
    // The agent reports the pause as the Paused condition; then a second pause conflicts.
    set_vmi_status(
        s.addr,
        "vm1",
        json!({"phase": "Running", "nodeName": "n1",
        "conditions": [{"type": "Paused", "status": "True", "reason": "PausedByUser"}]}),
    )
    .await;
    let r = cli(&server, &["pause", "vm1"]).await;
    assert_eq!(r.0, 1);
    assert_eq!(r.2, "Error from server (Conflict): Operation cannot be fulfilled on virtualmachineinstance.kubevirt.io \"vm1\": VMI is already paused");
    let r = cli(&server, &["unpause", "vmi", "vm1"]).await;
    assert_eq!(
        r,
        (
            0,
            "VMI vm1 was scheduled to unpause\n".into(),
            String::new()
        )
    );
    let r = cli(&server, &["unpause", "other"]).await;
    assert_eq!(r.2, "Error from server (Conflict): Operation cannot be fulfilled on virtualmachineinstance.kubevirt.io \"other\": VMI is not paused");
    assert_eq!(
        *calls.calls.lock().expect("lock"),
        ["pause default/vm1", "unpause default/vm1"]
    );
    // The node's own Status errors pass through (the double knows no VMI "other").
    let r = cli(&server, &["pause", "other"]).await;
    assert_eq!(
        r,
        (
            1,
            String::new(),
            "Error from server (NotFound): no such VM on this node".into()
        )
    );

    // Events about the VMI.
    let events = http_get(s.addr, "/api/v1/namespaces/default/events")
        .await
        .json();
    let mut reasons: Vec<&str> = events["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["involvedObject"]["kind"] == "VirtualMachineInstance")
        .filter_map(|e| e["reason"].as_str())
        .collect();
    reasons.sort_unstable();
    assert_eq!(reasons, ["Paused", "Unpaused"]);

    // Not running: 409 for pause (as virt-api), 400 for the console; absent: 404.
    set_vmi_status(
        s.addr,
        "other",
        json!({"phase": "Scheduled", "nodeName": "n1"}),
    )
    .await;
    let r = cli(&server, &["pause", "other"]).await;
    assert_eq!(r.2, "Error from server (Conflict): Operation cannot be fulfilled on virtualmachineinstance.kubevirt.io \"other\": VMI is not running");
    let r = cli(&server, &["console", "other"]).await;
    assert_eq!(
        r,
        (
            1,
            String::new(),
            "Error from server (BadRequest): VMI is not running".into()
        )
    );
    let r = cli(&server, &["pause", "ghost"]).await;
    assert_eq!(
        r.2,
        "Error from server (NotFound): virtualmachineinstances.kubevirt.io \"ghost\" not found"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_nodes_are_503() {
    let s = TestServer::start();
    let (double, _) = start_double();
    // The Secret holds a token the node does not accept.
    cluster(s.addr, double.port(), "wrong-token").await;
    let server = s.base();
    let r = cli(&server, &["pause", "vm1"]).await;
    assert_eq!(r.2, "Error from server (ServiceUnavailable): the agent of node n1 refused the API server's endpoint token");
    let r = cli(&server, &["console", "vm1"]).await;
    assert_eq!(r.2, "Error from server (ServiceUnavailable): the agent of node n1 refused the API server's endpoint token");

    // Nothing listens on the node's port.
    let port = closed_port();
    let r = patch(
        s.addr,
        "/api/v1/nodes/n1/status",
        "application/merge-patch+json",
        &json!({"status": {"daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}}).to_string(),
    )
    .await;
    assert_eq!(r.code(), 200, "{}", r.text());
    let r = cli(&server, &["pause", "vm1"]).await;
    assert_eq!(r.0, 1);
    let want = format!("Error from server (ServiceUnavailable): cannot reach the agent of node n1 at http://127.0.0.1:{port}: Connection refused");
    assert!(r.2.starts_with(&want), "{r:?}");

    // A VMI on a node that is not registered.
    set_vmi_status(
        s.addr,
        "other",
        json!({"phase": "Running", "nodeName": "gone"}),
    )
    .await;
    let r = cli(&server, &["console", "other"]).await;
    assert_eq!(
        r.2,
        "Error from server (ServiceUnavailable): node gone is not registered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_bytes_both_ways() {
    let s = TestServer::start();
    let (double, calls) = start_double();
    cluster(s.addr, double.port(), TOKEN).await;
    let server = s.base();
    let mut child = Command::new(env!("CARGO_BIN_EXE_monovirt"))
        .args(["console", "vm1", "--server", &server])
        .env_remove("MONOVIRT_SERVER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn monovirt console");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                return;
            }
        }
    });
    // Reads stdout until it holds `want` (a hang guard, not a timing).
    let mut seen = Vec::new();
    let mut until = |want: &[u8]| {
        while !seen.windows(want.len()).any(|w| w == want) {
            let chunk = rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|e| {
                    panic!(
                        "waiting for {want:?} ({e}); got {:?}",
                        String::from_utf8_lossy(&seen)
                    )
                });
            seen.extend(chunk);
        }
        seen.clone()
    };
    // The buffered output first, then each input comes back through the node.
    let out = until(RING);
    assert!(out.starts_with(RING), "{out:?}");
    stdin.write_all(b"uname -a\n").expect("write");
    stdin.flush().expect("flush");
    until(b"echo:uname -a\n");
    // Bytes pass unchanged, control characters and non-UTF-8 included.
    stdin.write_all(&[0x03, 0xff, 0x00, b'\r']).expect("write");
    stdin.flush().expect("flush");
    until(&[b'e', b'c', b'h', b'o', b':', 0x03, 0xff, 0x00, b'\r']);
    // End of input ends the session cleanly.
    drop(stdin);
    let status = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.status.success(), "{status:?}");
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(
        stderr.starts_with("Successfully connected to vm1 console. The escape sequence is ^]"),
        "{stderr}"
    );
    assert_eq!(*calls.calls.lock().expect("lock"), ["console default/vm1"]);
}
