//! Uploads (CDI's upload proxy) against a real `monovirt serve`: `monovirt image-upload`
//! into a new DataVolume (qcow2) and into an upload-target claim (gzip'd raw), both landing
//! with the right content; upload tokens are checked (none, a wrong one, one used twice);
//! and the same over HTTPS with bearer auth, where the upload path takes the upload token
//! instead of an API token.

mod common;
mod storage_support;

use common::api::BinaryServer;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use storage_support::{pattern, run, s, sha256, sha256_prefix, write_qcow2, IMPORT_PHASE};

const BIN: &str = env!("CARGO_BIN_EXE_monovirt");
const MIB: usize = 1 << 20;
const DVS: &str = "/apis/cdi.kubevirt.io/v1beta1/namespaces/default/datavolumes";
const PVCS: &str = "/api/v1/namespaces/default/persistentvolumeclaims";
const TOKENS: &str = "/apis/upload.cdi.kubevirt.io/v1beta1/namespaces/default/uploadtokenrequests";

/// `monovirt image-upload <args>` against `server`.
fn image_upload(server: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("image-upload")
        .args(args)
        .args(["--server", server, "--no-progress"])
        .env_remove("MONOVIRT_TOKEN")
        .output()
        .expect("run monovirt image-upload")
}

/// `monovirt image-upload dv NAME --size SIZE --image-path IMAGE <extra>` against `server`.
fn upload_dv(server: &str, name: &str, size: &str, image: &str, extra: &[&str]) -> Output {
    let mut args = vec!["dv", name, "--size", size, "--image-path", image];
    args.extend_from_slice(extra);
    image_upload(server, &args)
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "image-upload failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An HTTP(S) client for the checks, trusting `ca` when given.
fn http(ca: Option<&Path>) -> reqwest::Client {
    let mut b = reqwest::Client::builder();
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).expect("CA file");
        b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA"));
    }
    b.build().expect("client")
}

async fn send(r: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = r.send().await.expect("request");
    let code = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The directory of the PV bound to claim `name`.
async fn volume_dir(c: &reqwest::Client, base: &str, token: Option<&str>, name: &str) -> PathBuf {
    let auth = |r: reqwest::RequestBuilder| match token {
        Some(t) => r.bearer_auth(t),
        None => r,
    };
    let (_, pvc) = send(auth(c.get(format!("{base}{PVCS}/{name}")))).await;
    let pv = s(&pvc, "/spec/volumeName");
    let (_, pv) = send(auth(c.get(format!("{base}/api/v1/persistentvolumes/{pv}")))).await;
    PathBuf::from(s(&pv, "/spec/hostPath/path"))
}

/// Polls `url` until `ok` holds.
async fn wait(
    c: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut r = c.get(url);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let (_, v) = send(r).await;
        if ok(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: last answer {v:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the upload into claim `name` has succeeded; returns the claim.
async fn uploaded(c: &reqwest::Client, base: &str, token: Option<&str>, name: &str) -> Value {
    wait(
        c,
        &format!("{base}{PVCS}/{name}"),
        token,
        "upload done",
        |v| s(v, IMPORT_PHASE) == "Succeeded",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_upload_fills_a_new_data_volume_and_an_upload_claim() {
    let server = BinaryServer::start();
    let base = server.base();
    let c = http(None);
    let work = tempfile::tempdir().expect("tempdir");
    let raw = pattern(5 * MIB + 4096, 11);
    let (src, qcow2) = write_qcow2(work.path(), "disk", &raw);

    // A DataVolume with an upload source, created by image-upload, from a qcow2.
    let out = ok(&upload_dv(
        &base,
        "up-dv",
        "32Mi",
        &qcow2.display().to_string(),
        &[],
    ));
    assert!(out.contains("qcow2"), "{out}");
    let (_, dv) = send(c.get(format!("{base}{DVS}/up-dv"))).await;
    assert_eq!(s(&dv, "/status/phase"), "Succeeded", "{dv:#}");
    assert_eq!(dv["spec"]["source"], json!({"upload": {}}));
    let disk = volume_dir(&c, &base, None, "up-dv").await.join("disk.img");
    assert_eq!(std::fs::metadata(&disk).expect("disk").len(), 32 << 20);
    assert_eq!(sha256_prefix(&disk, raw.len()), sha256(&raw));

    // An upload-target claim, filled with a gzip'd raw image.
    run("gzip", &["-k", "-1", &src.display().to_string()]);
    let claim = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "up-pvc", "namespace": "default",
            "annotations": {"cdi.kubevirt.io/storage.upload.target": ""}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}}});
    let (code, v) = send(c.post(format!("{base}{PVCS}")).json(&claim)).await;
    assert_eq!(code, 201, "{v}");

    // Upload tokens are the upload path's credential: none or a made-up one is refused,
    // before any byte reaches the claim. (Refused requests send a small body: the server
    // answers without reading it.)
    for token in [None, Some("not-a-token")] {
        let mut r = c
            .post(format!("{base}/v1beta1/upload"))
            .body(raw[..4096].to_vec());
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let (code, v) = send(r).await;
        assert_eq!(code, 401, "{v}");
        assert_eq!(v["reason"], "Unauthorized");
    }
    // No token for a claim that does not exist.
    let request = |pvc: &str| {
        json!({"apiVersion": "upload.cdi.kubevirt.io/v1beta1", "kind": "UploadTokenRequest",
            "metadata": {"name": pvc}, "spec": {"pvcName": pvc}})
    };
    let (code, v) = send(c.post(format!("{base}{TOKENS}")).json(&request("nope"))).await;
    assert_eq!(code, 404, "{v}");
    // A filled upload target still gets a token (as in CDI), which opens nothing.
    let (code, v) = send(c.post(format!("{base}{TOKENS}")).json(&request("up-dv"))).await;
    assert_eq!(code, 201, "{v}");
    let (code, v) = send(
        c.post(format!("{base}/v1beta1/upload"))
            .bearer_auth(s(&v, "/status/token"))
            .body(raw[..4096].to_vec()),
    )
    .await;
    assert_eq!(code, 503, "{v}");
    assert!(s(&v, "/message").contains("not waiting"), "{v}");

    let gz = format!("{}.gz", src.display());
    ok(&image_upload(
        &base,
        &["pvc", "up-pvc", "--image-path", &gz],
    ));
    let pvc = uploaded(&c, &base, None, "up-pvc").await;
    assert_eq!(s(&pvc, "/status/phase"), "Bound");
    let disk = volume_dir(&c, &base, None, "up-pvc").await.join("disk.img");
    assert_eq!(std::fs::metadata(&disk).expect("disk").len(), 16 << 20);
    assert_eq!(sha256_prefix(&disk, raw.len()), sha256(&raw));

    // A filled claim never becomes ready for data again: image-upload gives up.
    let out = image_upload(
        &base,
        &["pvc", "up-pvc", "--image-path", &gz, "--wait-secs", "1s"],
    );
    assert!(!out.status.success(), "a second upload into a filled claim");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("did not become ready"), "{err}");
}

/// `monovirt serve` with plain HTTP and HTTPS listeners (the server's own CA).
struct TlsServer {
    child: Child,
    https: SocketAddr,
    dir: tempfile::TempDir,
}

impl TlsServer {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(BIN)
            .args(["serve", "--config", "/dev/null", "--no-agent"])
            .args(["--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn monovirt serve");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut https = None;
        for _ in 0..2 {
            let mut line = String::new();
            out.read_line(&mut line).expect("read stdout");
            if let Some(a) = line.trim().strip_prefix("listening on https://") {
                https = Some(a.parse().expect("address"));
            }
        }
        // Keep reading so later lines never hit a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        Self {
            child,
            https: https.expect("an HTTPS listener"),
            dir,
        }
    }

    fn base(&self) -> String {
        format!("https://127.0.0.1:{}", self.https.port())
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("tls/ca.crt")
    }

    fn admin_token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("admin-token"))
            .expect("admin token")
            .trim()
            .to_string()
    }

    /// `monovirt token create <args>`: a new API token.
    fn token(&self, args: &[&str]) -> String {
        let out = Command::new(BIN)
            .args(["token", "create"])
            .args(args)
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(["--config", "/dev/null"])
            .output()
            .expect("run monovirt token create");
        assert!(
            out.status.success(),
            "token create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_over_https_take_the_upload_token_not_an_api_token() {
    let server = TlsServer::start();
    let base = server.base();
    let ca = server.ca();
    let ca_arg = ca.display().to_string();
    let c = http(Some(&ca));
    let work = tempfile::tempdir().expect("tempdir");
    let raw = pattern(3 * MIB, 12);
    let (_, qcow2) = write_qcow2(work.path(), "disk", &raw);
    let image = qcow2.display().to_string();
    let admin = server.admin_token();

    // No API token: the DataVolume cannot even be created.
    let out = upload_dv(
        &base,
        "nope",
        "8Mi",
        &image,
        &["--certificate-authority", &ca_arg],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An unknown CA: the server is not trusted.
    let out = upload_dv(
        &base,
        "nope",
        "8Mi",
        &image,
        &["--token", &server.admin_token()],
    );
    assert!(!out.status.success(), "an untrusted server certificate");

    // An edit token bound to the namespace may upload there (it creates the DataVolume and
    // the UploadTokenRequest); the bytes go with the upload token.
    let edit = server.token(&["--role", "edit", "--namespace", "default"]);
    let out = ok(&upload_dv(
        &base,
        "tls-dv",
        "8Mi",
        &image,
        &["--certificate-authority", &ca_arg, "--token", &edit],
    ));
    assert!(out.contains("qcow2"), "{out}");
    let (code, dv) = send(c.get(format!("{base}{DVS}/tls-dv")).bearer_auth(&edit)).await;
    assert_eq!(code, 200);
    assert_eq!(s(&dv, "/status/phase"), "Succeeded", "{dv:#}");
    let disk = volume_dir(&c, &base, Some(&admin), "tls-dv")
        .await
        .join("disk.img");
    assert_eq!(sha256_prefix(&disk, raw.len()), sha256(&raw));

    // By hand: an UploadTokenRequest needs an API token allowed to create it...
    let claim = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "tls-pvc", "namespace": "default",
            "annotations": {"cdi.kubevirt.io/storage.upload.target": ""}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "8Mi"}}}});
    let (code, v) = send(
        c.post(format!("{base}{PVCS}"))
            .bearer_auth(&edit)
            .json(&claim),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    wait(
        &c,
        &format!("{base}{PVCS}/tls-pvc"),
        Some(&edit),
        "ready for data",
        |v| {
            s(
                v,
                "/metadata/annotations/cdi.kubevirt.io~1storage.pod.ready",
            ) == "true"
        },
    )
    .await;
    let request = json!({"apiVersion": "upload.cdi.kubevirt.io/v1beta1",
        "kind": "UploadTokenRequest", "metadata": {"name": "tls-pvc"},
        "spec": {"pvcName": "tls-pvc"}});
    let (code, _) = send(c.post(format!("{base}{TOKENS}")).json(&request)).await;
    assert_eq!(code, 401, "no API token");
    let view = server.token(&["--role", "view"]);
    let (code, _) = send(
        c.post(format!("{base}{TOKENS}"))
            .bearer_auth(&view)
            .json(&request),
    )
    .await;
    assert_eq!(code, 403, "a view token may not ask for upload tokens");
    let (code, v) = send(
        c.post(format!("{base}{TOKENS}"))
            .bearer_auth(&edit)
            .json(&request),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    let upload_token = s(&v, "/status/token").to_string();
    assert!(!upload_token.is_empty(), "{v}");

    // ...and the upload path takes the upload token, not an API token (not even admin's).
    let upload = format!("{base}/v1beta1/upload");
    let bytes = std::fs::read(&qcow2).expect("qcow2");
    // (Refused requests send a small body: the server answers before reading it.)
    let (code, v) = send(
        c.post(&upload)
            .bearer_auth(&admin)
            .body(bytes[..4096].to_vec()),
    )
    .await;
    assert_eq!(code, 401, "{v}");
    let (code, v) = send(
        c.post(&upload)
            .bearer_auth(&upload_token)
            .body(bytes.clone()),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    let pvc = uploaded(&c, &base, Some(&edit), "tls-pvc").await;
    assert_eq!(s(&pvc, "/status/phase"), "Bound");
    let disk = volume_dir(&c, &base, Some(&admin), "tls-pvc")
        .await
        .join("disk.img");
    assert_eq!(sha256_prefix(&disk, raw.len()), sha256(&raw));
    // The claim is filled: the token opens nothing any more.
    let (code, v) = send(
        c.post(&upload)
            .bearer_auth(&upload_token)
            .body(bytes[..4096].to_vec()),
    )
    .await;
    assert_eq!(code, 503, "{v}");
    assert!(s(&v, "/message").contains("not waiting"), "{v}");

    // The upload went into the audit log under its own name.
    let audit = std::fs::read_to_string(server.dir.path().join("audit.log")).unwrap_or_default();
    assert!(audit.contains("system:cdi-upload"), "{audit}");
}
