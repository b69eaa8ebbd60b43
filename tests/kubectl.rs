//! The stock `kubectl` against monovirt, as a user would drive it: an empty kubeconfig,
//! `--server http://127.0.0.1:PORT` and a throwaway `--cache-dir`. Asserts on kubectl's
//! own output lines (see shared/reference/kubectl-compat.md for what is on the wire).
//!
//! Needs `kubectl` on PATH (or `KUBECTL=/path`). Set MONOVIRT_REQUIRE_KUBECTL=1 to make
//! its absence a failure rather than a skip notice.

mod common;

use common::api::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

struct Kubectl {
    bin: PathBuf,
    server: String,
    dir: tempfile::TempDir,
}

impl Kubectl {
    fn find() -> Option<PathBuf> {
        if let Ok(p) = std::env::var("KUBECTL") {
            return Some(PathBuf::from(p));
        }
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("kubectl"))
                .find(|p| p.is_file())
        })
    }

    fn new(bin: PathBuf, server: String) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("kubeconfig"), "").expect("empty kubeconfig");
        std::fs::create_dir(dir.path().join("cache")).expect("cache dir");
        Self { bin, server, dir }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .env("HOME", self.dir.path())
            .env_remove("KUBERNETES_SERVICE_HOST")
            .arg("--server")
            .arg(&self.server)
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run kubectl")
    }

    /// Runs and requires success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs and requires failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn file(&self, name: &str, content: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, content).expect("write manifest");
        p.display().to_string()
    }
}

/// A background `kubectl ... -w` whose stdout lines arrive on a channel; killed on drop.
struct Watcher {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Watcher {
    fn start(k: &Kubectl, args: &[&str]) -> Self {
        let mut child = k
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kubectl -w");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines: rx }
    }

    /// Waits (bounded, as a hang guard) for a line matching `pred`.
    fn expect_line(&self, what: &str, pred: impl Fn(&[&str]) -> bool) -> String {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    if pred(&fields) {
                        return line;
                    }
                }
                Err(e) => panic!("no line {what} from kubectl -w: {e}"),
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn manifest(name: &str, run_strategy: &str, label: &str) -> String {
    format!(
        "apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: {name}
  labels:
    app: {label}
spec:
  runStrategy: {run_strategy}
  template:
    spec:
      domain:
        devices: {{}}
        resources:
          requests:
            memory: 64Mi
"
    )
}

fn lines(s: &str) -> Vec<Vec<&str>> {
    s.lines().map(|l| l.split_whitespace().collect()).collect()
}

fn kubectl_or_skip() -> Option<PathBuf> {
    let found = Kubectl::find();
    if found.is_none() {
        assert!(
            std::env::var("MONOVIRT_REQUIRE_KUBECTL").is_err(),
            "kubectl is required but not on PATH"
        );
        eprintln!("kubectl not found on PATH: skipping the kubectl tests (set MONOVIRT_REQUIRE_KUBECTL=1 to fail instead)");
    }
    found
}

#[test]
fn kubectl_drives_virtual_machines() {
    let Some(bin) = kubectl_or_skip() else { return };
    let server = TestServer::start();
    let k = Kubectl::new(bin, server.base());

    // Discovery: the dispatcher picks 1.32 from /version; api-resources lists our kinds.
    let version = k.ok(&["version", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&version).expect("version json");
    assert_eq!(v["serverVersion"]["minor"], "32");
    let resources = k.ok(&["api-resources"]);
    let rs = lines(&resources);
    assert_eq!(
        rs[0],
        ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    );
    assert!(
        rs.contains(&vec![
            "virtualmachines",
            "vm,vms",
            "kubevirt.io/v1",
            "true",
            "VirtualMachine"
        ]),
        "{resources}"
    );
    assert!(
        rs.iter().any(|l| l.first() == Some(&"nodes")
            && l.contains(&"false")
            && l.last() == Some(&"Node")),
        "{resources}"
    );

    // Nothing yet.
    let out = k.run(&["get", "vms"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "No resources found in default namespace."
    );

    // create -f (server-side strict validation through openapi v3).
    let vm1 = k.file("vm1.yaml", &manifest("vm1", "Halted", "demo"));
    assert_eq!(
        k.ok(&["create", "-f", &vm1]).trim(),
        "virtualmachine.kubevirt.io/vm1 created"
    );
    let err = k.fails(&["create", "-f", &vm1]);
    assert!(
        err.contains("Error from server (AlreadyExists): error when creating"),
        "{err}"
    );
    assert!(
        err.contains(r#"virtualmachines.kubevirt.io "vm1" already exists"#),
        "{err}"
    );
    let bad = k.file(
        "bad.yaml",
        &manifest("bad", "Halted", "demo").replace(
            "  runStrategy: Halted\n",
            "  runStrategy: Halted\n  foo: 1\n",
        ),
    );
    let err = k.fails(&["create", "-f", &bad]);
    assert!(
        err.contains(r#"strict decoding error: unknown field "spec.foo""#),
        "{err}"
    );

    // get: the Table with KubeVirt's columns.
    let out = k.ok(&["get", "vms"]);
    let t = lines(&out);
    assert_eq!(t[0][..2], ["NAME", "AGE"]);
    assert_eq!(t[1][0], "vm1");
    assert!(
        t[1][1].ends_with('s') || t[1][1].ends_with('m'),
        "age column: {out}"
    );
    let out = k.ok(&["get", "vm", "vm1", "-o", "yaml"]);
    assert!(out.lines().any(|l| l == "kind: VirtualMachine"), "{out}");
    assert!(out.lines().any(|l| l == "  name: vm1"), "{out}");
    assert!(
        out.lines().any(|l| l.trim() == "runStrategy: Halted"),
        "{out}"
    );
    let err = k.fails(&["get", "vm", "nope"]);
    assert_eq!(
        err.trim(),
        r#"Error from server (NotFound): virtualmachines.kubevirt.io "nope" not found"#
    );
    let out = k.ok(&["get", "vms", "-A", "--show-labels"]);
    let t = lines(&out);
    assert_eq!(t[0][0], "NAMESPACE");
    assert_eq!(t[1][..2], ["default", "vm1"]);
    assert_eq!(t[1].last(), Some(&"app=demo"));

    // apply -f: created, unchanged, configured.
    let vm2 = k.file("vm2.yaml", &manifest("vm2", "Halted", "demo"));
    assert_eq!(
        k.ok(&["apply", "-f", &vm2]).trim(),
        "virtualmachine.kubevirt.io/vm2 created"
    );
    assert_eq!(
        k.ok(&["apply", "-f", &vm2]).trim(),
        "virtualmachine.kubevirt.io/vm2 unchanged"
    );
    let vm2 = k.file("vm2.yaml", &manifest("vm2", "Halted", "changed"));
    assert_eq!(
        k.ok(&["apply", "-f", &vm2]).trim(),
        "virtualmachine.kubevirt.io/vm2 configured"
    );
    assert_eq!(
        k.ok(&["get", "vm", "vm2", "-o", "jsonpath={.metadata.labels.app}"]),
        "changed"
    );
    // Server-side apply.
    let vm3 = k.file("vm3.yaml", &manifest("vm3", "Halted", "ssa"));
    assert_eq!(
        k.ok(&["apply", "--server-side", "-f", &vm3]).trim(),
        "virtualmachine.kubevirt.io/vm3 serverside-applied"
    );

    // patch --type merge; the default strategic type is refused for a custom resource.
    assert_eq!(
        k.ok(&[
            "patch",
            "vm",
            "vm1",
            "--type",
            "merge",
            "-p",
            r#"{"metadata":{"labels":{"patched":"yes"}}}"#
        ])
        .trim(),
        "virtualmachine.kubevirt.io/vm1 patched"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "vm",
            "vm1",
            "-o",
            "jsonpath={.metadata.labels.patched}"
        ]),
        "yes"
    );
    let err = k.fails(&[
        "patch",
        "vm",
        "vm1",
        "-p",
        r#"{"metadata":{"labels":{"s":"1"}}}"#,
    ]);
    assert!(err.contains("application/strategic-merge-patch+json is not supported by kubevirt.io/v1, Kind=VirtualMachine"), "{err}");
    assert!(
        k.ok(&["get", "vms", "-l", "patched=yes", "-o", "name"])
            .trim()
            == "virtualmachine.kubevirt.io/vm1"
    );

    // edit with an EDITOR script.
    let editor = k.file(
        "editor.sh",
        "#!/bin/sh\nsed -i 's/runStrategy: Halted/runStrategy: Manual/' \"$1\"\n",
    );
    make_executable(Path::new(&editor));
    let out = k
        .command(&["edit", "vm", "vm1"])
        .env("EDITOR", &editor)
        .env("KUBE_EDITOR", &editor)
        .output()
        .expect("edit");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "virtualmachine.kubevirt.io/vm1 edited"
    );
    assert_eq!(
        k.ok(&["get", "vm", "vm1", "-o", "jsonpath={.spec.runStrategy}"]),
        "Manual"
    );

    // explain, from the served OpenAPI v3 schema.
    let out = k.ok(&["explain", "vm.spec"]);
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["KIND:", "VirtualMachine"]),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("runStrategy")),
        "{out}"
    );

    // get vm NAME -w: the current row, then a row per change.
    let w = Watcher::start(&k, &["get", "vm", "vm1", "-w"]);
    w.expect_line("header", |f| f.first() == Some(&"NAME"));
    w.expect_line("initial row", |f| f.first() == Some(&"vm1"));
    k.ok(&["label", "vm", "vm1", "watched=yes"]);
    w.expect_line("row after the change", |f| f.first() == Some(&"vm1"));
    drop(w);

    // get vmis -w: a created VMI shows up.
    let w = Watcher::start(&k, &["get", "vmis", "-w"]);
    let vmi = k.file("vmi.yaml", "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata:\n  name: vmi1\nspec:\n  domain:\n    devices: {}\n    resources:\n      requests:\n        memory: 64Mi\n");
    assert_eq!(
        k.ok(&["create", "-f", &vmi]).trim(),
        "virtualmachineinstance.kubevirt.io/vmi1 created"
    );
    w.expect_line("vmi1 row", |f| f.first() == Some(&"vmi1"));
    drop(w);

    // describe: the generic dump and the (empty) events.
    let out = k.ok(&["describe", "vm", "vm1"]);
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["Name:", "vm1"]),
        "{out}"
    );

    // delete waits for the object to be gone; with a finalizer it waits until it is removed.
    assert_eq!(
        k.ok(&["delete", "vm", "vm1"]).trim(),
        r#"virtualmachine.kubevirt.io "vm1" deleted"#
    );
    let err = k.fails(&["get", "vm", "vm1"]);
    assert!(err.contains("NotFound"), "{err}");
    k.ok(&[
        "patch",
        "vm",
        "vm2",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"finalizers":["example.com/hold"]}}"#,
    ]);
    let deleting = k
        .command(&["delete", "vm", "vm2"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("delete");
    // Let kubectl reach its wait (the object stays while the finalizer is there), then release it.
    for _ in 0..200 {
        let out = k.ok(&[
            "get",
            "vm",
            "vm2",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}",
        ]);
        if !out.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    k.ok(&[
        "patch",
        "vm",
        "vm2",
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    let out = deleting.wait_with_output().expect("delete finished");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"virtualmachine.kubevirt.io "vm2" deleted"#
    );
}

fn make_executable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}
