//! Operations, end to end against the real binary: the config file's errors, HTTPS with
//! the server's own CA (`curl --cacert`), bearer tokens per role and namespace (401/403
//! as Status objects, revocation), the audit log, `monovirt kubeconfig` with the stock
//! kubectl, systemd's readiness and watchdog notifications on a NOTIFY_SOCKET this test
//! listens on, the unit file under `systemd-analyze verify`, and `/metrics` under
//! `promtool check metrics`.
//!
//! curl, kubectl, systemd-analyze and promtool come from scripts/setup.sh; a missing one
//! fails the test that needs it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_monovirt");

fn tool(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("{name} is not on PATH: run scripts/setup.sh"))
}

/// `monovirt serve` with plain HTTP and HTTPS on loopback port 0 and an empty config.
struct Daemon {
    child: Child,
    http: SocketAddr,
    https: SocketAddr,
    dir: tempfile::TempDir,
}

impl Daemon {
    fn start(envs: &[(&str, &str)]) -> Self {
        Self::start_with("log_format = \"json\"\n", &[("RUST_LOG", "warn")], envs)
    }

    /// `serve` with `config` as its config file; its stderr goes to [`Daemon::log`].
    fn start_with(config: &str, log_env: &[(&str, &str)], envs: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, config).expect("config");
        let log = std::fs::File::create(dir.path().join("stderr.log")).expect("log file");
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--config")
            .arg(&path)
            .args(["--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(log);
        for (k, v) in log_env.iter().chain(envs) {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn monovirt serve");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut addr = |scheme: &str| -> SocketAddr {
            let mut line = String::new();
            out.read_line(&mut line).expect("read stdout");
            line.trim()
                .strip_prefix(&format!("listening on {scheme}://"))
                .unwrap_or_else(|| {
                    let log = std::fs::read_to_string(dir.path().join("stderr.log"));
                    panic!("unexpected line {line:?}; the daemon logged:\n{log:?}")
                })
                .parse()
                .expect("address")
        };
        let http = addr("http");
        let https = addr("https");
        Self {
            child,
            http,
            https,
            dir,
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// What the daemon logged so far (its stderr).
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).expect("the daemon's log")
    }

    fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data().join("admin-token"))
            .expect("admin token")
            .trim()
            .to_string()
    }

    fn https_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.https.port())
    }

    /// `monovirt <args> --data-dir D --config /dev/null`.
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .arg("--data-dir")
            .arg(self.data())
            .args(["--config", "/dev/null"])
            .output()
            .expect("run monovirt")
    }

    fn new_token(&self, args: &[&str]) -> String {
        let mut all = vec!["token", "create"];
        all.extend_from_slice(args);
        let out = self.cli(&all);
        assert!(
            out.status.success(),
            "token create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// curl over HTTPS, verifying the server with the data dir's CA. Returns (code, body).
    fn curl(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String) {
        let mut c = Command::new(tool("curl"));
        c.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method])
            .arg("--cacert")
            .arg(self.data().join("tls/ca.crt"));
        if let Some(t) = token {
            c.arg("-H").arg(format!("Authorization: Bearer {t}"));
        }
        if let Some(b) = body {
            c.args(["-H", "Content-Type: application/json", "--data-binary", b]);
        }
        let out = c.arg(self.https_url(path)).output().expect("run curl");
        assert!(
            out.status.success(),
            "curl {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').expect("status line");
        (code.parse().expect("code"), body.to_string())
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("wait")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

fn vm(name: &str) -> String {
    serde_json::json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {
            "runStrategy": "Halted",
            "template": {"spec": {"domain": {"devices": {}, "memory": {"guest": "64Mi"}}}}
        }
    })
    .to_string()
}

fn status(body: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    assert_eq!(v["kind"], "Status", "{v}");
    v
}

#[test]
fn https_tokens_roles_revocation_and_audit() {
    let d = Daemon::start(&[]);
    let vms = "/apis/kubevirt.io/v1/namespaces/default/virtualmachines";
    // No token: 401 as a Status; health needs none.
    let (code, body) = d.curl("GET", vms, None, None);
    assert_eq!(code, 401);
    assert_eq!(status(&body)["reason"], "Unauthorized");
    assert_eq!(d.curl("GET", "/readyz", None, None).0, 200);
    // The admin token made on first start.
    let admin = d.admin_token();
    assert_eq!(d.curl("GET", vms, Some(&admin), None).0, 200);
    assert_eq!(
        d.curl("POST", vms, Some(&admin), Some(&vm("by-admin"))).0,
        201
    );

    // view: reads, no writes.
    let view = d.new_token(&["--role", "view"]);
    assert_eq!(d.curl("GET", vms, Some(&view), None).0, 200);
    let (code, body) = d.curl("POST", vms, Some(&view), Some(&vm("by-view")));
    assert_eq!(code, 403);
    let s = status(&body);
    assert_eq!(s["reason"], "Forbidden");
    assert!(
        s["message"]
            .as_str()
            .expect("message")
            .contains("cannot create resource \"virtualmachines\""),
        "{s}"
    );
    assert_eq!(
        d.curl("DELETE", &format!("{vms}/by-admin"), Some(&view), None)
            .0,
        403
    );

    // edit bound to a namespace: writes there, nothing elsewhere.
    let edit = d.new_token(&["--role", "edit", "--namespace", "default", "--ttl", "1h"]);
    assert_eq!(
        d.curl("POST", vms, Some(&edit), Some(&vm("by-edit"))).0,
        201
    );
    let other = "/apis/kubevirt.io/v1/namespaces/kube-public/virtualmachines";
    assert_eq!(d.curl("GET", other, Some(&edit), None).0, 403);
    assert_eq!(d.curl("GET", "/api/v1/nodes", Some(&edit), None).0, 403);
    assert_eq!(d.curl("GET", "/metrics", Some(&edit), None).0, 403);

    // Revoked: 401 at once.
    let id = edit.split('.').next().expect("id").to_string();
    let out = d.cli(&["token", "revoke", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, body) = d.curl("GET", vms, Some(&edit), None);
    assert_eq!(code, 401, "{body}");
    let list = String::from_utf8_lossy(&d.cli(&["token", "list"]).stdout).into_owned();
    assert!(list.contains("view") && !list.contains(&id), "{list}");

    // Plain HTTP on loopback stays open (trusted like the socket).
    let out = Command::new(tool("curl"))
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://{}{vms}", d.http))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");

    // The audit log: the admin's create, the refused create, the edit's create.
    let log = std::fs::read_to_string(d.data().join("audit.log")).expect("audit log");
    let entries: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let creates: Vec<(String, u64)> = entries
        .iter()
        .filter(|e| e["verb"] == "create")
        .map(|e| {
            (
                e["user"].as_str().expect("user").to_string(),
                e["code"].as_u64().expect("code"),
            )
        })
        .collect();
    let admin_id = admin.split('.').next().expect("id");
    let view_id = view.split('.').next().expect("id");
    assert_eq!(
        creates,
        vec![
            (format!("token:{admin_id}"), 201),
            (format!("token:{view_id}"), 403),
            (format!("token:{id}"), 201),
        ]
    );
    use std::os::unix::fs::PermissionsExt;
    for f in [
        "admin-token",
        "join-token",
        "tokens.json",
        "audit.log",
        "tls/ca.key",
    ] {
        let mode = std::fs::metadata(d.data().join(f))
            .expect(f)
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{f} is readable by others: {mode:o}");
    }
}

#[test]
fn kubectl_works_with_the_printed_kubeconfig() {
    let d = Daemon::start(&[]);
    let out = d.cli(&["kubeconfig", "--server", &d.https_url("")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let home = tempfile::tempdir().expect("tempdir");
    let kubeconfig = home.path().join("config");
    std::fs::write(&kubeconfig, &out.stdout).expect("kubeconfig");
    let manifest = home.path().join("vm.json");
    std::fs::write(&manifest, vm("from-kubectl")).expect("manifest");
    let kubectl = |args: &[&str]| {
        let out = Command::new(tool("kubectl"))
            .env("KUBECONFIG", &kubeconfig)
            .env("HOME", home.path())
            .env_remove("KUBERNETES_SERVICE_HOST")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run kubectl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stdout, stderr) = kubectl(&["apply", "-f", manifest.to_str().expect("utf-8")]);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("virtualmachine.kubevirt.io/from-kubectl created"),
        "{stdout}"
    );
    let (ok, stdout, stderr) = kubectl(&["get", "vms"]);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.lines().any(|l| l.starts_with("from-kubectl")),
        "{stdout}"
    );
    // A view token in the same kubeconfig: reads work, deletes are refused.
    let view = d.new_token(&["--role", "view"]);
    let (ok, _, stderr) = kubectl(&["--token", &view, "delete", "vm", "from-kubectl"]);
    assert!(!ok);
    assert!(
        stderr.contains("Forbidden") || stderr.contains("forbidden"),
        "{stderr}"
    );
}

#[test]
fn config_errors_name_the_key_and_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "[api]\nlisten = [\"127.0.0.1:0\"]\nlsiten = 1\n",
            "line 3: api.lsiten: unknown field",
        ),
        (
            "[api]\nlisten = [\"0.0.0.0:8080\"]\n",
            "api.listen: 0.0.0.0:8080 is not a loopback address",
        ),
        (
            "log_format = \"xml\"\n",
            "log_format: unknown variant `xml`",
        ),
        (
            "[network]\ndefault_subnet = \"10.0.2.0/33\"\n",
            "network.default_subnet",
        ),
    ];
    for (text, want) in cases {
        let config = dir.path().join("config.toml");
        std::fs::write(&config, text).expect("config");
        let out = Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{text:?}: {stderr}");
        assert!(stderr.contains(config.to_str().expect("utf-8")), "{stderr}");
        assert!(stderr.contains(want), "{text:?}: want {want:?} in {stderr}");
        assert!(!dir.path().join("data").exists(), "nothing is started");
    }
}

#[test]
fn readiness_watchdog_and_stopping_reach_the_notify_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut d = Daemon::start(&[
        ("NOTIFY_SOCKET", path.to_str().expect("utf-8")),
        // A ping every 100 ms.
        ("WATCHDOG_USEC", "200000"),
    ]);
    let recv = || {
        let mut buf = [0u8; 512];
        let n = sock
            .recv(&mut buf)
            .expect("a notification within the hang guard");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = recv();
    assert!(first.starts_with("READY=1\n"), "{first}");
    // The API answers by then.
    assert_eq!(
        Command::new(tool("curl"))
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("http://{}/readyz", d.http))
            .output()
            .expect("curl")
            .stdout,
        b"200"
    );
    for _ in 0..2 {
        assert_eq!(recv(), "WATCHDOG=1");
    }
    assert!(d.terminate().success());
    let mut last = recv();
    while last == "WATCHDOG=1" {
        last = recv();
    }
    assert!(last.starts_with("STOPPING=1"), "{last}");
}

#[test]
fn unit_file_passes_systemd_analyze_verify() {
    let root = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .args(["install", "--root"])
        .arg(root.path())
        .output()
        .expect("install");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unit = root.path().join("etc/systemd/system/monovirt.service");
    // The units ours refers to (multi-user.target, network-online.target, sysinit.target
    // ...) come from the host's systemd package, copied with their relative links.
    std::fs::create_dir_all(root.path().join("usr/lib/systemd")).expect("mkdir");
    let cp = Command::new("cp")
        .arg("-a")
        .arg("/usr/lib/systemd/system")
        .arg(root.path().join("usr/lib/systemd/"))
        .status()
        .expect("cp");
    assert!(
        cp.success(),
        "copying the host's systemd units (package systemd)"
    );
    let out = Command::new(tool("systemd-analyze"))
        .arg("verify")
        .arg(format!("--root={}", root.path().display()))
        .arg(&unit)
        .output()
        .expect("systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    // Nothing about our unit (warnings about the host's other units are not ours).
    assert!(
        !stderr.lines().any(|l| l.contains("monovirt.service")),
        "{stderr}"
    );
    let text = std::fs::read_to_string(&unit).expect("unit");
    for key in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=",
        "LimitNOFILE=",
        "TimeoutStopSec=",
    ] {
        assert!(text.contains(key), "{key}");
    }
}

#[test]
fn metrics_pass_promtool() {
    let d = Daemon::start(&[]);
    let admin = d.admin_token();
    // Some traffic so the request series exist.
    let vms = "/apis/kubevirt.io/v1/namespaces/default/virtualmachines";
    assert_eq!(d.curl("POST", vms, Some(&admin), Some(&vm("m1"))).0, 201);
    assert_eq!(d.curl("GET", vms, None, None).0, 401);
    let (code, text) = d.curl("GET", "/metrics", Some(&admin), None);
    assert_eq!(code, 200);
    assert!(text.contains("apiserver_request_total{"), "{text}");
    assert!(text.contains("code=\"401\""), "{text}");
    promtool_check(&text);
}

/// Polls `f` until it returns `Some`, for up to a minute (a hang guard, not a timing).
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn config_storage_classes_and_log_format_change_what_the_daemon_does() {
    let volumes = tempfile::tempdir().expect("tempdir");
    let fast = volumes.path().join("fast");
    let d = Daemon::start_with(
        &format!(
            "log_format = \"json\"\n[storage.classes]\nfast = \"{}\"\n",
            fast.display()
        ),
        &[("RUST_LOG", "info")],
        &[],
    );
    let admin = d.admin_token();
    // The class exists, names the configured directory, and the directory was made.
    let (code, body) = d.curl(
        "GET",
        "/apis/storage.k8s.io/v1/storageclasses/fast",
        Some(&admin),
        None,
    );
    assert_eq!(code, 200, "{body}");
    let sc: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(sc["provisioner"], "monovirt.io/local");
    assert_eq!(sc["parameters"]["path"], fast.display().to_string());
    assert!(fast.is_dir());
    // The local provisioner serves it: a claim of class `fast` gets its disk there.
    let pvcs = "/api/v1/namespaces/default/persistentvolumeclaims";
    let pvc = serde_json::json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "on-fast"},
        "spec": {"storageClassName": "fast", "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Mi"}}}
    });
    let (code, body) = d.curl("POST", pvcs, Some(&admin), Some(&pvc.to_string()));
    assert_eq!(code, 201, "{body}");
    let uid = serde_json::from_str::<serde_json::Value>(&body).expect("JSON")["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string();
    eventually("the claim is bound", || {
        let (_, body) = d.curl("GET", &format!("{pvcs}/on-fast"), Some(&admin), None);
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (v["status"]["phase"] == "Bound").then_some(())
    });
    assert!(
        fast.join(format!("pvc-{uid}/disk.img")).is_file(),
        "{:?}",
        std::fs::read_dir(&fast).map(|r| r.count())
    );
    // log_format = "json": every line is one JSON object, fields flattened.
    let log = d.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["message"] == "storage class created"
            && l["class"] == "fast"
            && l["level"] == "INFO"),
        "{log}"
    );
    drop(d);

    // log_format = "text": plain lines for journald (no JSON, no terminal colours).
    let d = Daemon::start_with(
        &format!(
            "log_format = \"text\"\n[storage.classes]\nfast2 = \"{}\"\n",
            volumes.path().join("fast2").display()
        ),
        &[("RUST_LOG", "info")],
        &[],
    );
    let log = eventually("the class is logged", || {
        let log = d.log();
        log.lines()
            .any(|l| l.contains("storage class created") && l.contains("class=fast2"))
            .then_some(log)
    });
    assert!(!log.contains('\x1b'), "{log:?}");
    assert!(log.lines().all(|l| !l.starts_with('{')), "{log}");
}

fn promtool_check(text: &str) {
    use std::io::Write;
    let mut child = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}\n---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
