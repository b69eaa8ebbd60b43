//! The storage tests' harness: a loopback HTTP file server for import sources (with
//! throttled, truncating and basic-auth routes), image makers, and API helpers against a
//! real `monovirt serve`.
#![allow(dead_code)]

use axum::body::Body;
use axum::extract::{Path as AxPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::Value;
use sha2::Digest;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Serves files of `dir` on 127.0.0.1 (`/images/NAME`), plus:
/// `/slow/NAME` (64 KiB every 25 ms), `/truncated/NAME` (announces the full length, sends
/// half, closes), `/auth/NAME` (basic auth `user`/`pass`).
pub struct ImageServer {
    pub addr: SocketAddr,
    pub dir: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ImageServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read(dir: &Path, name: &str) -> Result<Vec<u8>, StatusCode> {
    if name.contains('/') || name.contains("..") {
        return Err(StatusCode::BAD_REQUEST);
    }
    tokio::fs::read(dir.join(name))
        .await
        .map_err(|_| StatusCode::NOT_FOUND)
}

async fn plain(State(dir): State<PathBuf>, AxPath(name): AxPath<String>) -> Response {
    match read(&dir, &name).await {
        Ok(b) => b.into_response(),
        Err(s) => (s, "no such image\n").into_response(),
    }
}

async fn slow(State(dir): State<PathBuf>, AxPath(name): AxPath<String>) -> Response {
    let data = match read(&dir, &name).await {
        Ok(b) => b,
        Err(s) => return s.into_response(),
    };
    let len = data.len();
    let stream = futures_util::stream::unfold((data, 0usize), |(data, off)| async move {
        if off >= data.len() {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        let end = (off + (64 << 10)).min(data.len());
        let chunk = bytes::Bytes::copy_from_slice(&data[off..end]);
        Some((Ok::<_, std::io::Error>(chunk), (data, end)))
    });
    Response::builder()
        .header(header::CONTENT_LENGTH, len)
        .body(Body::from_stream(stream))
        .expect("response")
}

async fn truncated(State(dir): State<PathBuf>, AxPath(name): AxPath<String>) -> Response {
    let data = match read(&dir, &name).await {
        Ok(b) => b,
        Err(s) => return s.into_response(),
    };
    let len = data.len();
    let half = bytes::Bytes::copy_from_slice(&data[..len / 2]);
    let stream =
        futures_util::stream::iter(vec![Ok(half), Err(std::io::Error::other("connection cut"))]);
    Response::builder()
        .header(header::CONTENT_LENGTH, len)
        .body(Body::from_stream(stream))
        .expect("response")
}

async fn auth(
    State(dir): State<PathBuf>,
    AxPath(name): AxPath<String>,
    headers: HeaderMap,
) -> Response {
    // "user:pass"
    let ok = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some("Basic dXNlcjpwYXNz");
    if !ok {
        return (StatusCode::UNAUTHORIZED, "who are you\n").into_response();
    }
    plain(State(dir), AxPath(name)).await
}

impl ImageServer {
    pub async fn start(dir: PathBuf) -> Self {
        let app = Router::new()
            .route("/images/{name}", get(plain))
            .route("/slow/{name}", get(slow))
            .route("/truncated/{name}", get(truncated))
            .route("/auth/{name}", get(auth))
            .with_state(dir.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("image server");
        });
        Self { addr, dir, task }
    }

    pub fn url(&self, route: &str, name: &str) -> String {
        format!("http://{}/{route}/{name}", self.addr)
    }
}

/// Deterministic non-zero bytes (so nothing is a hole).
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9 ^ u32::from(seed);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as u8) | 1
        })
        .collect()
}

pub fn sha256(data: &[u8]) -> String {
    monovirt::storage::checksum::hex(&sha2::Sha256::digest(data))
}

/// sha256 of the first `len` bytes of a file.
pub fn sha256_prefix(path: &Path, len: usize) -> String {
    use std::io::Read;
    let mut data = vec![0u8; len];
    std::fs::File::open(path)
        .expect("open image")
        .read_exact(&mut data)
        .expect("read image");
    sha256(&data)
}

/// Runs a command, panicking with its stderr on failure.
pub fn run(cmd: &str, args: &[&str]) {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Converts the raw image `raw` to a qcow2 image `qcow2` with qemu-img.
pub fn qcow2_from(raw: &Path, qcow2: &Path) {
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            &raw.display().to_string(),
            &qcow2.display().to_string(),
        ],
    );
}

/// Writes `raw` to `dir/NAME.raw` and converts it to `dir/NAME.qcow2`; returns both paths.
pub fn write_qcow2(dir: &Path, name: &str, raw: &[u8]) -> (PathBuf, PathBuf) {
    let src = dir.join(format!("{name}.raw"));
    std::fs::write(&src, raw).expect("write raw image");
    let q = dir.join(format!("{name}.qcow2"));
    qcow2_from(&src, &q);
    (src, q)
}

/// Issue 6's PersistentVolumeClaim manifest, exactly as written there but for the import
/// URL: class `ocs-gold`, ReadWriteOnce, 20Gi.
pub fn issue_manifest(url: &str) -> Value {
    let manifest = format!(
        r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: fedora-disk0
  annotations:
    cdi.kubevirt.io/storage.import.endpoint: "{url}"
spec:
  storageClassName: ocs-gold
  accessModes:
  - ReadWriteOnce
  resources:
    requests:
      storage: 20Gi
"#
    );
    serde_yaml_ng::from_str(&manifest).expect("the manifest is YAML")
}

/// The pointer to a claim's import phase (CDI's `cdi.kubevirt.io/storage.pod.phase`
/// annotation), for [`s`].
pub const IMPORT_PHASE: &str = "/metadata/annotations/cdi.kubevirt.io~1storage.pod.phase";

/// The names of the entries of `dir` (what an import left behind).
pub fn entries(dir: &Path) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect()
}

/// A field of a JSON object by pointer, as a string ("" when absent).
pub fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}
