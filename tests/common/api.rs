//! The API integration tests' harness: an API server on 127.0.0.1:0 with a
//! temporary data dir (in-process on its own runtime thread, or the real binary), and a
//! raw HTTP helper that shows status, headers and body exactly as sent.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{header, HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use monovirt::apiserver::{AppState, Listeners};
use monovirt::store::{Objects, StoreConfig};
use serde_json::{json, Value};
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::guest;

/// A server running in this process on its own runtime thread; stopped on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    pub socket: PathBuf,
    pub objects: Objects,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub fn start() -> Self {
        Self::start_with(StoreConfig::default())
    }

    pub fn start_with(config: StoreConfig) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let objects = Objects::open_with(&dir.path().join("store"), config).expect("store");
        let socket = dir.path().join("monovirt.sock");
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let objects2 = objects.clone();
        let socket2 = socket.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listeners =
                    Listeners::bind("127.0.0.1:0".parse().expect("addr"), Some(&socket2))
                        .await
                        .expect("bind");
                addr_tx
                    .send(listeners.local_addr().expect("addr"))
                    .expect("send");
                let state = AppState::new(objects2, api::resource::resources().to_vec());
                monovirt::apiserver::run(listeners, state, async move {
                    let _ = stop_rx.await;
                })
                .await
                .expect("serve");
            });
        });
        let addr = addr_rx.recv().expect("server started");
        Self {
            addr,
            socket,
            objects,
            stop: Some(stop_tx),
            thread: Some(thread),
            dir,
        }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How [`BinaryServer::launch`] starts `monovirt serve`.
#[derive(Debug, Default)]
pub struct ServeOptions<'a> {
    /// Arguments after the listen address and data dir (`--no-agent`, `--node-name`, ...).
    pub args: &'a [&'a str],
    /// Its config file; none (`/dev/null`) by default.
    pub config: Option<&'a Path>,
    /// Its `RUST_LOG`; by default `MONOVIRT_TEST_LOG`, else `warn`.
    pub log: Option<&'a str>,
    /// Where its stderr goes; the test's own by default.
    pub stderr: Option<std::fs::File>,
}

/// The real `monovirt serve` binary on 127.0.0.1:0; SIGTERMed and reaped on drop.
pub struct BinaryServer {
    pub child: Child,
    pub addr: SocketAddr,
    /// The HTTPS address, when started with `--tls-listen`.
    pub https: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
}

impl BinaryServer {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir)
    }

    pub fn start_in(dir: tempfile::TempDir) -> Self {
        Self::start_with(dir, &[])
    }

    /// `monovirt serve` with `extra` arguments (`--no-agent`, `--node-name`, ...).
    pub fn start_with(dir: tempfile::TempDir, extra: &[&str]) -> Self {
        Self::launch(
            dir,
            ServeOptions {
                args: extra,
                ..ServeOptions::default()
            },
        )
    }

    /// `monovirt serve` on `dir` as `options` say; returns once it listens.
    pub fn launch(dir: tempfile::TempDir, options: ServeOptions) -> Self {
        let (child, addr, https) = Self::spawn(dir.path(), options);
        Self {
            child,
            addr,
            https,
            dir,
        }
    }

    /// A daemon restart: SIGTERMs this server, waits for it, and starts `monovirt serve`
    /// again on the same data dir as `options` say (the new addresses replace the old);
    /// returns once it listens.
    pub fn restart(&mut self, options: ServeOptions) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
        let (child, addr, https) = Self::spawn(self.dir.path(), options);
        self.child = child;
        self.addr = addr;
        self.https = https;
    }

    /// Starts `monovirt serve` on `dir` and reads the addresses it listens on.
    fn spawn(dir: &Path, options: ServeOptions) -> (Child, SocketAddr, Option<SocketAddr>) {
        let config = options.config.unwrap_or(Path::new("/dev/null"));
        // MONOVIRT_TEST_LOG=info shows the server's log while debugging a test.
        let log = options.log.map(str::to_string).unwrap_or_else(|| {
            std::env::var("MONOVIRT_TEST_LOG").unwrap_or_else(|_| "warn".into())
        });
        let stderr = options.stderr.map_or_else(Stdio::inherit, Stdio::from);
        let mut child = Command::new(env!("CARGO_BIN_EXE_monovirt"))
            // Without a config of its own, an empty one: a host's
            // /etc/monovirt/config.toml must not leak in.
            .args(["serve", "--config"])
            .arg(config)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(options.args)
            .env("RUST_LOG", log)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn monovirt serve");
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut listening = |scheme: &str| -> SocketAddr {
            let mut line = String::new();
            stdout.read_line(&mut line).expect("read stdout");
            line.trim()
                .strip_prefix(&format!("listening on {scheme}://"))
                .unwrap_or_else(|| panic!("unexpected line {line:?}"))
                .parse()
                .expect("address")
        };
        let addr = listening("http");
        let https = options
            .args
            .contains(&"--tls-listen")
            .then(|| listening("https"));
        (child, addr, https)
    }

    /// `monovirt serve` with its local agent as node `node-a` and the test guest imported
    /// as [`guest::IMAGE`], plus `extra` arguments.
    pub fn with_guest(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        guest::import_image(dir.path());
        let mut args = vec!["--node-name", "node-a"];
        args.extend_from_slice(extra);
        Self::start_with(dir, &args)
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("wait")
    }
}

impl Drop for BinaryServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

/// A response as received.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn code(&self) -> u16 {
        self.status.as_u16()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> hyper::Response<Incoming> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    sender.send_request(req).await.expect("send")
}

fn build(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, addr.to_string());
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::from(body))).expect("request")
}

/// One request, response fully read.
pub async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Resp {
    let resp = send(addr, build(addr, method, path, headers, body)).await;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Resp {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn get(addr: SocketAddr, path: &str) -> Resp {
    request(
        addr,
        Method::GET,
        path,
        &[("accept", "application/json")],
        Vec::new(),
    )
    .await
}

pub async fn post(addr: SocketAddr, path: &str, obj: &Value) -> Resp {
    request(
        addr,
        Method::POST,
        path,
        &[("content-type", "application/json")],
        obj.to_string().into_bytes(),
    )
    .await
}

pub async fn put(addr: SocketAddr, path: &str, obj: &Value) -> Resp {
    request(
        addr,
        Method::PUT,
        path,
        &[("content-type", "application/json")],
        obj.to_string().into_bytes(),
    )
    .await
}

pub async fn patch(addr: SocketAddr, path: &str, content_type: &str, body: &str) -> Resp {
    request(
        addr,
        Method::PATCH,
        path,
        &[("content-type", content_type)],
        body.as_bytes().to_vec(),
    )
    .await
}

pub async fn delete(addr: SocketAddr, path: &str, options: Option<&Value>) -> Resp {
    let body = options
        .map(|o| o.to_string().into_bytes())
        .unwrap_or_default();
    request(
        addr,
        Method::DELETE,
        path,
        &[("content-type", "application/json")],
        body,
    )
    .await
}

/// A watch stream being read line by line.
pub struct Watch {
    pub status: StatusCode,
    pub headers: HeaderMap,
    body: Incoming,
    buf: Vec<u8>,
}

impl Watch {
    pub async fn start(addr: SocketAddr, path: &str, accept: &str) -> Self {
        let resp = send(
            addr,
            build(addr, Method::GET, path, &[("accept", accept)], Vec::new()),
        )
        .await;
        let (parts, body) = resp.into_parts();
        Self {
            status: parts.status,
            headers: parts.headers,
            body,
            buf: Vec::new(),
        }
    }

    /// The next event, or `None` when the stream ends. Panics after 30 s of silence (a
    /// hang guard, not a timing assertion).
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return Some(serde_json::from_slice(&line).expect("event JSON"));
            }
            let frame = tokio::time::timeout(Duration::from_secs(30), self.body.frame())
                .await
                .expect("no watch event within 30 s");
            match frame {
                None => return None,
                Some(f) => {
                    if let Ok(d) = f.expect("frame").into_data() {
                        self.buf.extend_from_slice(&d);
                    }
                }
            }
        }
    }

    /// The rest of the body, as text (for error responses).
    pub async fn rest(self) -> Value {
        let b = self.body.collect().await.expect("body").to_bytes();
        serde_json::from_slice(&b).expect("json")
    }
}

/// A minimal valid KubeVirt VirtualMachine.
pub fn vm(name: &str) -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "labels": {"app": "demo"}},
        "spec": {
            "runStrategy": "Halted",
            "template": {"spec": {
                "domain": {"devices": {}, "resources": {"requests": {"memory": "64Mi"}}}
            }}
        }
    })
}

pub const VMS: &str = "/apis/kubevirt.io/v1/namespaces/default/virtualmachines";
pub const VMIS: &str = "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances";

/// Polls `path` until `ok` holds for its JSON (an absent object is `Value::Null`); panics
/// with the last answer after two minutes (a hang guard, not a speed check: guests run
/// under PVM here).
pub async fn wait_for(
    addr: SocketAddr,
    path: &str,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = get(addr, path).await;
        let v = if r.code() == 404 {
            Value::Null
        } else {
            r.json()
        };
        if ok(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: last answer {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The condition of `type_` in an object's `status.conditions`.
pub fn condition<'a>(v: &'a Value, type_: &str) -> Option<&'a Value> {
    v["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}
