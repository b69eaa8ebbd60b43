//! Store benchmark: monovirt's store (the `Objects` layer on sled, durable group commit)
//! against a real etcd (Debian's `etcd-server`, started here on loopback with a temporary
//! data dir, driven through its v3 JSON gateway) with the same object sizes.
//!
//! Measures durable creates/s with 1, 16 and 64 concurrent clients, list latency at
//! 10 000 objects and watch fan-out to 100 watchers on the `Objects` layer; the creates
//! and the list again over HTTP against the real binary (`monovirt serve`); and prints one
//! table with the etcd ratios. Run with `cargo bench --bench store`. Bounded: every phase runs for a
//! fixed time or a fixed count. `MONOVIRT_BENCH_SECS` sets the create phase length
//! (default 3 s); without an `etcd` binary on PATH only monovirt's column is printed.

#[path = "../tests/common/kinds.rs"]
mod kinds;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use kinds::VM;
use monovirt::store::{ListOptions, Objects, StoreConfig, WatchEventType, WriteOptions};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A realistic ~1 KiB VirtualMachine manifest.
fn manifest(name: &str) -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name, "labels": {"app": "bench", "kubevirt.io/os": "fedora"},
                     "annotations": {"description": "benchmark virtual machine"}},
        "spec": {"runStrategy": "Halted", "template": {
            "metadata": {"labels": {"kubevirt.io/vm": name}},
            "spec": {"domain": {"cpu": {"cores": 2, "sockets": 1, "threads": 1},
                                "memory": {"guest": "2Gi"},
                                "resources": {"requests": {"memory": "2Gi"}},
                                "devices": {"disks": [
                                    {"name": "rootdisk", "disk": {"bus": "virtio"}},
                                    {"name": "cloudinit", "disk": {"bus": "virtio"}}],
                                  "interfaces": [{"name": "default", "masquerade": {}}]}},
                     "networks": [{"name": "default", "pod": {}}],
                     "terminationGracePeriodSeconds": 180,
                     "volumes": [
                        {"name": "rootdisk", "containerDisk": {"image": "quay.io/containerdisks/fedora:40"}},
                        {"name": "cloudinit", "cloudInitNoCloud": {"userData": "#cloud-config\npassword: fedora\nchpasswd: { expire: False }\nssh_authorized_keys:\n  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBenchmarkKeyMaterialOnlyForSize bench@monovirt\n"}}]}}}
    })
}

fn secs() -> Duration {
    let s = std::env::var("MONOVIRT_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(s)
}

/// Runs `clients` tasks calling `op(client, i)` for `dur`; returns completed ops/s.
async fn throughput<F, Fut>(clients: usize, dur: Duration, op: F) -> Result<f64>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let op = op.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while start.elapsed() < dur {
                op(c, i).await?;
                i += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

struct Row {
    name: String,
    monovirt: f64,
    /// The same workload over HTTP against `monovirt serve`.
    http: Option<f64>,
    etcd: Option<f64>,
    unit: &'static str,
    higher_is_better: bool,
}

async fn bench_objects(
    rows: &mut Vec<Row>,
    etcd: Option<&Etcd>,
    object_size: &mut usize,
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let objects = Objects::open_with(dir.path(), StoreConfig::default())?;
    let sample = objects
        .create(
            &VM,
            Some("default"),
            manifest("size-probe"),
            &WriteOptions::default(),
        )
        .await?;
    *object_size = serde_json::to_vec(&sample.object)?.len();
    let dur = secs();
    for clients in [1usize, 16, 64] {
        let o = objects.clone();
        let ours = throughput(clients, dur, move |c, i| {
            let o = o.clone();
            async move {
                o.create(
                    &VM,
                    Some("default"),
                    manifest(&format!("c{clients}-{c}-{i}")),
                    &WriteOptions::default(),
                )
                .await?;
                Ok(())
            }
        })
        .await?;
        let theirs = match etcd {
            Some(e) => Some(e.creates(clients, dur, *object_size).await?),
            None => None,
        };
        rows.push(Row {
            name: format!("durable creates/s, {clients} client(s)"),
            monovirt: ours,
            http: None,
            etcd: theirs,
            unit: "ops/s",
            higher_is_better: true,
        });
    }
    // List latency at 10 000 objects: a fresh store holding exactly that many.
    let dir = tempfile::tempdir()?;
    let objects = Objects::open(dir.path())?;
    fill(&objects, 10_000).await?;
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let list = objects.list(&VM, Some("default"), &ListOptions::default())?;
        times.push(t.elapsed());
        if list.items.len() != 10_000 {
            bail!("listed {} objects, expected 10000", list.items.len());
        }
    }
    let ours = median(times);
    let theirs = match etcd {
        Some(e) => Some(e.list_latency(10_000, *object_size).await?),
        None => None,
    };
    rows.push(Row {
        name: "list 10 000 objects (median)".into(),
        monovirt: ours.as_secs_f64() * 1e3,
        http: None,
        etcd: theirs.map(|d| d.as_secs_f64() * 1e3),
        unit: "ms",
        higher_is_better: false,
    });
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        objects.list(
            &VM,
            Some("default"),
            &ListOptions {
                limit: Some(500),
                ..Default::default()
            },
        )?;
        times.push(t.elapsed());
    }
    rows.push(Row {
        name: "list first page of 500 of 10 000 (median)".into(),
        monovirt: median(times).as_secs_f64() * 1e3,
        http: None,
        etcd: None,
        unit: "ms",
        higher_is_better: false,
    });
    // Watch fan-out: 100 watchers, 16 writers, 1000 creates; all deliveries counted.
    let dir = tempfile::tempdir()?;
    let objects = Objects::open(dir.path())?;
    const WATCHERS: usize = 100;
    const EVENTS: u64 = 1000;
    let from = objects.revision().to_string();
    let mut watchers = Vec::new();
    for _ in 0..WATCHERS {
        let mut rx = objects.watch(
            &VM,
            None,
            &ListOptions {
                resource_version: Some(from.clone()),
                ..Default::default()
            },
        )?;
        watchers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while n < EVENTS {
                match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
                    Ok(Some(e)) if e.type_ == WatchEventType::Added => n += 1,
                    Ok(Some(_)) => {}
                    _ => bail!("watch stalled after {n} events"),
                }
            }
            Ok(Instant::now())
        }));
    }
    let start = Instant::now();
    let counter = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for _ in 0..16 {
        let o = objects.clone();
        let counter = counter.clone();
        writers.push(tokio::spawn(async move {
            loop {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                if i >= EVENTS {
                    return Ok::<_, anyhow::Error>(());
                }
                o.create(
                    &VM,
                    Some("default"),
                    manifest(&format!("w{i}")),
                    &WriteOptions::default(),
                )
                .await?;
            }
        }));
    }
    for w in writers {
        w.await??;
    }
    let writes_done = start.elapsed();
    let mut last = start;
    for w in watchers {
        last = last.max(w.await??);
    }
    let total = last - start;
    rows.push(Row {
        name: format!("watch fan-out: {EVENTS} creates to {WATCHERS} watchers, deliveries/s"),
        monovirt: (EVENTS as f64 * WATCHERS as f64) / total.as_secs_f64(),
        http: None,
        etcd: None,
        unit: "ev/s",
        higher_is_better: true,
    });
    rows.push(Row {
        name: "watch fan-out: last delivery after last write ack".into(),
        monovirt: (total.saturating_sub(writes_done)).as_secs_f64() * 1e3,
        http: None,
        etcd: None,
        unit: "ms",
        higher_is_better: false,
    });
    Ok(())
}

async fn fill(objects: &Objects, n: u64) -> Result<()> {
    let counter = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let o = objects.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(());
                }
                o.create(
                    &VM,
                    Some("default"),
                    manifest(&format!("vm-{i:05}")),
                    &WriteOptions::default(),
                )
                .await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// `monovirt serve` (the real binary) on loopback with a temporary data dir.
struct Serve {
    child: Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const VMS: &str = "/apis/kubevirt.io/v1/namespaces/default/virtualmachines";

impl Serve {
    fn start() -> Result<Self> {
        use std::io::BufRead;
        let dir = tempfile::tempdir()?;
        let mut child = Command::new(env!("CARGO_BIN_EXE_monovirt"))
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting monovirt serve")?;
        let stdout = child.stdout.take().context("piped stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .with_context(|| format!("unexpected first line of serve: {line:?}"))?
            .parse()?;
        Ok(Self {
            child,
            addr,
            _dir: dir,
        })
    }

    async fn conn(&self) -> Result<Conn> {
        Conn::open_addr(self.addr).await
    }

    async fn creates(&self, clients: usize, dur: Duration) -> Result<f64> {
        let mut conns = Vec::new();
        for _ in 0..clients {
            conns.push(Arc::new(tokio::sync::Mutex::new(self.conn().await?)));
        }
        let conns = Arc::new(conns);
        throughput(clients, dur, move |c, i| {
            let conns = conns.clone();
            async move {
                let body = manifest(&format!("h{clients}-{c}-{i}"));
                conns[c]
                    .lock()
                    .await
                    .request("POST", VMS, Some(&body), 201)
                    .await?;
                Ok(())
            }
        })
        .await
    }

    async fn list_latency(&self, n: u64) -> Result<Duration> {
        let counter = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let mut conn = self.conn().await?;
            let counter = counter.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = counter.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return Ok::<_, anyhow::Error>(());
                    }
                    let body = manifest(&format!("vm-{i:05}"));
                    conn.request(
                        "POST",
                        "/apis/kubevirt.io/v1/namespaces/list/virtualmachines",
                        Some(&body),
                        201,
                    )
                    .await?;
                }
            }));
        }
        for t in tasks {
            t.await??;
        }
        let mut conn = self.conn().await?;
        let mut times = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let list = conn
                .request(
                    "GET",
                    "/apis/kubevirt.io/v1/namespaces/list/virtualmachines",
                    None,
                    200,
                )
                .await?;
            times.push(t.elapsed());
            let items = list["items"].as_array().map(Vec::len).unwrap_or(0);
            if items as u64 != n {
                bail!("listed {items} over HTTP, expected {n}");
            }
        }
        Ok(median(times))
    }
}

/// A real etcd on loopback with a temporary data dir; killed on drop.
struct Etcd {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// One HTTP/1.1 connection to etcd's gateway.
struct Conn(hyper::client::conn::http1::SendRequest<Full<Bytes>>);

impl Conn {
    async fn open(port: u16) -> Result<Self> {
        Self::open_addr(std::net::SocketAddr::from(([127, 0, 0, 1], port))).await
    }

    async fn open_addr(addr: std::net::SocketAddr) -> Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Self(send))
    }

    async fn post(&mut self, path: &str, body: &Value) -> Result<Value> {
        self.request("POST", path, Some(body), 200).await
    }

    async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        expect: u16,
    ) -> Result<Value> {
        let bytes = match body {
            Some(b) => serde_json::to_vec(b)?,
            None => Vec::new(),
        };
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(Full::new(Bytes::from(bytes)))?;
        self.0.ready().await?;
        let resp = self.0.send_request(req).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        if status.as_u16() != expect {
            bail!(
                "{method} {path}: {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok(serde_json::from_slice(&bytes)?)
    }
}

impl Etcd {
    async fn start() -> Result<Option<Self>> {
        if Command::new("etcd")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            return Ok(None);
        }
        let dir = tempfile::tempdir()?;
        let (port, peer) = (free_port()?, free_port()?);
        let client_url = format!("http://127.0.0.1:{port}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .args(["--name", "bench", "--data-dir"])
            .arg(dir.path())
            .args([
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args([
                "--initial-cluster",
                &format!("bench={peer_url}"),
                "--log-level",
                "error",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting etcd")?;
        let etcd = Etcd {
            child,
            port,
            _dir: dir,
        };
        for _ in 0..100 {
            if let Ok(mut c) = Conn::open(port).await {
                if c.post("/v3/kv/range", &json!({"key": b64(b"probe")}))
                    .await
                    .is_ok()
                {
                    return Ok(Some(etcd));
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("etcd did not become ready on port {port}")
    }

    /// Creates as kube-apiserver does them: a txn "create if absent" per object.
    async fn creates(&self, clients: usize, dur: Duration, size: usize) -> Result<f64> {
        let value = b64(&vec![b'x'; size]);
        let mut conns = Vec::new();
        for _ in 0..clients {
            conns.push(Arc::new(tokio::sync::Mutex::new(
                Conn::open(self.port).await?,
            )));
        }
        let conns = Arc::new(conns);
        throughput(clients, dur, move |c, i| {
            let conns = conns.clone();
            let value = value.clone();
            async move {
                let key = b64(format!("/registry/kubevirt.io/virtualmachines/default/c{clients}-{c}-{i}").as_bytes());
                let txn = json!({
                    "compare": [{"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
                    "success": [{"request_put": {"key": key, "value": value}}]
                });
                let r = conns[c].lock().await.post("/v3/kv/txn", &txn).await?;
                if r.get("succeeded") != Some(&json!(true)) {
                    bail!("etcd create failed: {r}");
                }
                Ok(())
            }
        })
        .await
    }

    async fn list_latency(&self, n: usize, size: usize) -> Result<Duration> {
        let value = b64(&vec![b'x'; size]);
        let prefix = "/registry/kubevirt.io/virtualmachines/list/";
        let counter = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let mut conn = Conn::open(self.port).await?;
            let counter = counter.clone();
            let value = value.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = counter.fetch_add(1, Ordering::Relaxed);
                    if i >= n as u64 {
                        return Ok::<_, anyhow::Error>(());
                    }
                    let key = b64(format!("{prefix}vm-{i:05}").as_bytes());
                    conn.post("/v3/kv/put", &json!({"key": key, "value": value}))
                        .await?;
                }
            }));
        }
        for t in tasks {
            t.await??;
        }
        let mut conn = Conn::open(self.port).await?;
        let mut end = prefix.as_bytes().to_vec();
        *end.last_mut().expect("non-empty prefix") += 1;
        let mut times = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let r = conn
                .post(
                    "/v3/kv/range",
                    &json!({"key": b64(prefix.as_bytes()), "range_end": b64(&end)}),
                )
                .await?;
            // Decoding every value, as an apiserver must.
            let kvs = r["kvs"].as_array().map(Vec::len).unwrap_or(0);
            times.push(t.elapsed());
            if kvs != n {
                bail!("etcd listed {kvs} keys, expected {n}");
            }
        }
        Ok(median(times))
    }
}

fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let etcd = Etcd::start().await?;
        let mut rows = Vec::new();
        let mut size = 0;
        bench_objects(&mut rows, etcd.as_ref(), &mut size).await?;
        // The same creates and list over HTTP, against the real binary.
        let dur = secs();
        for (i, clients) in [1usize, 16, 64].into_iter().enumerate() {
            let serve = Serve::start()?;
            rows[i].http = Some(serve.creates(clients, dur).await?);
        }
        let serve = Serve::start()?;
        let mut conn = serve.conn().await?;
        conn.request(
            "POST",
            "/api/v1/namespaces",
            Some(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "list"}})),
            201,
        )
        .await?;
        let list = serve.list_latency(10_000).await?;
        rows[3].http = Some(list.as_secs_f64() * 1e3);
        drop(serve);
        println!();
        println!(
            "store benchmark: object size {size} bytes, {} cores, create phases {:.1} s each",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            secs().as_secs_f64()
        );
        println!(
            "{:<58} {:>14} {:>14} {:>14} {:>10} {:>10}",
            "measure", "store", "HTTP (serve)", "etcd", "store/etcd", "HTTP/etcd"
        );
        for r in rows {
            let ratio = |x: f64, e: f64| {
                if r.higher_is_better {
                    x / e
                } else {
                    e / x
                }
            };
            let show = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1} {}", r.unit));
            let (a, b) = match r.etcd {
                Some(e) => (
                    format!("{:.2}x", ratio(r.monovirt, e)),
                    r.http
                        .map_or("-".to_string(), |h| format!("{:.2}x", ratio(h, e))),
                ),
                None => ("-".to_string(), "-".to_string()),
            };
            println!(
                "{:<58} {:>14} {:>14} {:>14} {:>10} {:>10}",
                r.name,
                show(Some(r.monovirt)),
                show(r.http),
                show(r.etcd),
                a,
                b
            );
        }
        println!("(ratio > 1 means monovirt is better: more ops/s, or less time)");
        Ok(())
    })
}
