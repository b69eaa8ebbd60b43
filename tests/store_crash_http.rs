//! Crash safety over HTTP: the real binary (`monovirt serve` on 127.0.0.1:0 with a
//! temporary data dir) is SIGKILLed at random moments while concurrent clients create
//! VirtualMachines over HTTP; after each kill it is restarted on the same data dir, and
//! every create that got a 201 must be readable.
//!
//! `serve` prints `listening on http://ADDR` on stdout once bound. Bounded: a fixed number
//! of rounds, each killed within a second and a half of starting the load.

mod common;

use bytes::Bytes;
use common::random::random_below;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CLIENTS: usize = 16;
const ROUNDS: usize = 4;
const VMS: &str = "/apis/kubevirt.io/v1/namespaces/default/virtualmachines";

fn vm(name: &str) -> Value {
    json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
           "metadata": {"name": name, "labels": {"crash": "test"}},
           "spec": {"runStrategy": "Halted", "template": {"spec": {"domain": {
               "devices": {}, "resources": {"requests": {"memory": "64Mi"}}}}}}})
}

struct Conn(hyper::client::conn::http1::SendRequest<Full<Bytes>>);

impl Conn {
    async fn open(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Ok(Self(send))
    }

    async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        let bytes = body
            .map(|b| serde_json::to_vec(b).expect("json"))
            .unwrap_or_default();
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| e.to_string())?;
        self.0.ready().await.map_err(|e| e.to_string())?;
        let resp = self.0.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }
}

/// A server process, SIGKILLed when dropped (also when a check fails mid-test).
struct Server(Child);

impl Server {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn start_server(dir: &std::path::Path) -> (Server, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_monovirt"))
        .arg("serve")
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning the server");
    let stdout = child.stdout.take().expect("piped stdout");
    let child = Server(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = line.strip_prefix("listening on http://") {
                let _ = tx.send(addr.parse::<SocketAddr>().expect("address"));
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the server reports its address");
    (child, addr)
}

#[test]
fn acknowledged_http_creates_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let acked: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    for round in 0..ROUNDS {
        let (mut child, addr) = start_server(dir.path());
        let deadline = Instant::now() + Duration::from_secs(10);
        let before = acked.lock().expect("lock").len();
        rt.block_on(async {
            let mut clients = Vec::new();
            for c in 0..CLIENTS {
                let acked = acked.clone();
                clients.push(tokio::spawn(async move {
                    let Ok(mut conn) = Conn::open(addr).await else {
                        return;
                    };
                    for i in 0.. {
                        if Instant::now() > deadline {
                            return;
                        }
                        let name = format!("r{round}-c{c}-{i}");
                        match conn.call("POST", VMS, Some(&vm(&name))).await {
                            Ok((201, obj)) => {
                                let uid = obj["metadata"]["uid"].as_str().unwrap_or("").to_string();
                                acked.lock().expect("lock").insert(name, uid);
                            }
                            Ok((code, body)) => panic!("create {name}: {code} {body}"),
                            // The server was killed: the write may or may not be there.
                            Err(_) => return,
                        }
                    }
                }));
            }
            tokio::time::sleep(Duration::from_millis(200 + random_below(1300))).await;
            child.kill();
            for c in clients {
                c.await.expect("client task");
            }
        });
        let now = acked.lock().expect("lock").len();
        eprintln!(
            "round {round}: {} creates acknowledged before SIGKILL",
            now - before
        );
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(!acked.is_empty(), "no create was acknowledged");
    // Restart once more and read everything back over HTTP.
    let (mut child, addr) = start_server(dir.path());
    rt.block_on(async {
        let mut conn = Conn::open(addr).await.expect("connect");
        for (name, uid) in &acked {
            let (code, obj) = conn
                .call("GET", &format!("{VMS}/{name}"), None)
                .await
                .expect("get");
            assert_eq!(code, 200, "acknowledged create of {name} lost: {obj}");
            assert_eq!(
                obj["metadata"]["uid"].as_str(),
                Some(uid.as_str()),
                "{name}"
            );
        }
        let (code, list) = conn.call("GET", VMS, None).await.expect("list");
        assert_eq!(code, 200);
        assert!(list["items"].as_array().expect("items").len() >= acked.len());
        let (code, _) = conn
            .call("POST", VMS, Some(&vm("after-crash")))
            .await
            .expect("create");
        assert_eq!(code, 201, "the restarted server accepts writes");
    });
    child.kill();
}
