//! The acceptance test of the operations issue: the README's "Installing as a service"
//! steps, replayed as far as this host allows without touching its own systemd, `/etc`
//! or `/var/lib`.
//!
//! - `monovirt install` goes into a scratch root (`--root`), as a package build would;
//! - `systemctl enable --now` is replaced by what it does for a `Type=notify` unit: run
//!   the installed unit's `ExecStart=` (its absolute paths mapped into the scratch root)
//!   with a NOTIFY_SOCKET this test listens on, and wait for `READY=1`. The installed
//!   config is used as installed, except `data_dir` (pointed into the scratch root). The
//!   daemon runs in a network namespace the test creates, so the config's
//!   `tls_listen = ["0.0.0.0:6443"]` is served as shipped without exposing this host;
//! - then the README's client steps run in that namespace: `monovirt kubeconfig`,
//!   `kubectl get vms` with its output, curl with the CA and the admin token,
//!   `monovirt token create --role view --namespace default --ttl 30d` and
//!   `monovirt token revoke`.
//!
//! The test first checks the README still says these commands, so the two cannot drift.
//! Needs root, `ip` (iproute2), kubectl and curl (scripts/setup.sh); a missing one fails.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_monovirt");

/// The README lines this test replays, verbatim.
const README_STEPS: &[&str] = &[
    "target/release/monovirt install",
    "systemctl enable --now monovirt",
    "monovirt kubeconfig > ~/.kube/config",
    "kubectl get vms",
    "curl --cacert /var/lib/monovirt/tls/ca.crt \\",
    "-H \"Authorization: Bearer $(cat /var/lib/monovirt/admin-token)\" \\",
    "https://127.0.0.1:6443/apis/kubevirt.io/v1/namespaces/default/virtualmachines",
    "monovirt token create --role view --namespace default --ttl 30d",
    "monovirt token revoke <id>",
];

fn tool(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("{name} is not on PATH: run scripts/setup.sh"))
}

fn check(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace with only loopback, up; deleted on drop.
struct Netns(String);

impl Netns {
    fn create() -> Self {
        let name = format!("mvinst{}", std::process::id());
        check(
            "ip netns add",
            &Command::new(tool("ip"))
                .args(["netns", "add", &name])
                .output()
                .expect("run ip"),
        );
        let ns = Self(name);
        check(
            "ip link set lo up",
            &Command::new(tool("ip"))
                .args(["-n", &ns.0, "link", "set", "lo", "up"])
                .output()
                .expect("run ip"),
        );
        ns
    }

    /// `program args` inside the namespace.
    fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(tool("ip"));
        c.args(["netns", "exec", &self.0]).arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The daemon started from the installed unit; SIGTERM (as `systemctl stop`) on drop.
struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// `ExecStart=` of the unit, split into words, absolute paths moved under `root`.
fn exec_start(unit: &str, root: &Path) -> Vec<String> {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the unit has ExecStart=");
    line.split_whitespace()
        .map(|w| match w.strip_prefix('/') {
            Some(rel) => root.join(rel).display().to_string(),
            None => w.to_string(),
        })
        .collect()
}

#[test]
fn readme_install_steps_give_a_tls_service_kubectl_can_use() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("## Installing as a service")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("the README has an 'Installing as a service' section");
    for step in README_STEPS {
        assert!(
            section.lines().any(|l| l.trim_start().starts_with(step)),
            "the README's install section no longer says {step:?}: update this test"
        );
    }

    // `monovirt install`, into a scratch root.
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    check(
        "monovirt install",
        &Command::new(BIN)
            .args(["install", "--root"])
            .arg(r)
            .output()
            .expect("run install"),
    );
    let bin = r.join("usr/local/bin/monovirt");
    let config = r.join("etc/monovirt/config.toml");
    let unit = std::fs::read_to_string(r.join("etc/systemd/system/monovirt.service"))
        .expect("the installed unit");
    assert!(unit.contains("Type=notify"), "{unit}");
    // Only the data dir moves into the scratch root.
    let data = r.join("var/lib/monovirt");
    let installed = std::fs::read_to_string(&config).expect("installed config");
    assert!(
        installed.contains("data_dir = \"/var/lib/monovirt\"\n"),
        "{installed}"
    );
    let installed = installed.replace(
        "data_dir = \"/var/lib/monovirt\"\n",
        &format!("data_dir = \"{}\"\n", data.display()),
    );
    std::fs::write(&config, installed).expect("config");

    // `systemctl enable --now monovirt`: ExecStart= under a NOTIFY_SOCKET, until READY=1.
    let netns = Netns::create();
    let notify_path = r.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
    notify
        .set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    let argv = exec_start(&unit, r);
    assert_eq!(
        Path::new(&argv[0]),
        bin,
        "ExecStart runs the installed binary"
    );
    let mut start = netns.command(Path::new(&argv[0]));
    start
        .args(&argv[1..])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = start.spawn().expect("start the service");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let service = Service(child);
    // Keep draining its output so it never blocks on a full pipe; the journal's role.
    let journal = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            lines.push(l);
        }
        lines
    });
    std::thread::spawn(move || for _ in BufReader::new(stdout).lines() {});
    let mut buf = [0u8; 512];
    let n = notify.recv(&mut buf).unwrap_or_else(|e| {
        panic!("no READY=1 from the service ({e})");
    });
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.starts_with("READY=1"), "{ready}");

    // The files the README promises, mode 0600.
    use std::os::unix::fs::PermissionsExt;
    for f in ["admin-token", "join-token", "tls/ca.crt", "monovirt.sock"] {
        let meta = std::fs::metadata(data.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        if f != "tls/ca.crt" {
            assert_eq!(meta.permissions().mode() & 0o077, 0, "{f}");
        }
    }

    // `monovirt kubeconfig > ~/.kube/config` (the installed config is the default one;
    // here it is named, as it is not in /etc).
    let home = tempfile::tempdir().expect("home");
    std::fs::create_dir_all(home.path().join(".kube")).expect("~/.kube");
    let kubeconfig = check(
        "monovirt kubeconfig",
        &Command::new(&bin)
            .arg("kubeconfig")
            .arg("--config")
            .arg(&config)
            .output()
            .expect("run kubeconfig"),
    );
    assert!(
        kubeconfig.contains("server: https://127.0.0.1:6443"),
        "{kubeconfig}"
    );
    std::fs::write(home.path().join(".kube/config"), &kubeconfig).expect("write kubeconfig");

    // `kubectl get vms`, stock kubectl reading ~/.kube/config, over TLS with the token.
    let kubectl = |args: &[&str]| {
        netns
            .command(&tool("kubectl"))
            .args(args)
            .env_clear()
            .env("HOME", home.path())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .output()
            .expect("run kubectl")
    };
    let out = kubectl(&["get", "vms"]);
    check("kubectl get vms", &out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No resources found in default namespace"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vm = home.path().join("vm.yaml");
    std::fs::write(
        &vm,
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata:\n  name: installed\n\
         spec:\n  runStrategy: Halted\n  template:\n    spec:\n      domain:\n        \
         devices: {}\n        memory:\n          guest: 64Mi\n",
    )
    .expect("manifest");
    let out = kubectl(&["apply", "-f", vm.to_str().expect("utf-8")]);
    assert!(check("kubectl apply", &out).contains("virtualmachine.kubevirt.io/installed created"));
    let out = kubectl(&["get", "vms"]);
    assert!(
        check("kubectl get vms", &out)
            .lines()
            .any(|l| l.starts_with("installed ")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // curl --cacert .../ca.crt -H "Authorization: Bearer $(cat .../admin-token)" https://...
    let admin = std::fs::read_to_string(data.join("admin-token")).expect("admin token");
    let curl = |token: &str| {
        let out = netns
            .command(&tool("curl"))
            .args(["-sS", "-w", "\n%{http_code}", "--cacert"])
            .arg(data.join("tls/ca.crt"))
            .arg("-H")
            .arg(format!("Authorization: Bearer {}", token.trim()))
            .arg("https://127.0.0.1:6443/apis/kubevirt.io/v1/namespaces/default/virtualmachines")
            .output()
            .expect("run curl");
        let text = check("curl", &out);
        let (body, code) = text.rsplit_once('\n').expect("status code line");
        (code.to_string(), body.to_string())
    };
    let (code, body) = curl(&admin);
    assert_eq!(code, "200", "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(list["kind"], "VirtualMachineList");
    assert_eq!(list["items"][0]["metadata"]["name"], "installed");
    assert_eq!(curl("not.atoken").0, "401");

    // `monovirt token create --role view --namespace default --ttl 30d`, then revoke it.
    let view = check(
        "monovirt token create",
        &Command::new(&bin)
            .args([
                "token",
                "create",
                "--role",
                "view",
                "--namespace",
                "default",
                "--ttl",
                "30d",
                "--config",
            ])
            .arg(&config)
            .output()
            .expect("run token create"),
    );
    assert_eq!(curl(&view).0, "200");
    let id = view.split('.').next().expect("token id");
    check(
        "monovirt token revoke",
        &Command::new(&bin)
            .args(["token", "revoke", id, "--config"])
            .arg(&config)
            .output()
            .expect("run token revoke"),
    );
    assert_eq!(curl(&view).0, "401");

    // `systemctl stop`: SIGTERM, STOPPING=1, a clean exit.
    let mut service = service;
    let _ = Command::new("kill")
        .args(["-TERM", &service.0.id().to_string()])
        .status();
    let status = service.0.wait().expect("wait");
    let log = journal.join().expect("the log reader");
    assert!(status.success(), "{status}\n{}", log.join("\n"));
    let mut last = String::new();
    while let Ok(n) = notify.recv(&mut buf) {
        last = String::from_utf8_lossy(&buf[..n]).into_owned();
        if last.starts_with("STOPPING=1") {
            break;
        }
    }
    assert!(last.starts_with("STOPPING=1"), "{last}");
}
