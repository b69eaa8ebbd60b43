//! The client commands (`monovirt get|apply|delete|start|stop|restart`) as a user runs
//! them: the built binary against a real `monovirt serve` on a temporary data dir, over
//! TCP, the Unix socket, MONOVIRT_SERVER and HTTPS (`--ca-file` / MONOVIRT_CA_FILE). Output,
//! exit codes and error messages are checked as printed.

mod common;

use common::api::BinaryServer;
use common::cli::{run_with, Run};

/// `monovirt ARGS --server <the test server over TCP>`.
fn cli(s: &BinaryServer, args: &[&str]) -> Run {
    let server = s.base();
    let mut all = args.to_vec();
    all.extend(["--server", &server]);
    run_with(&all, &[], "")
}

const MANIFEST: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: dev
---
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: vm1
  labels: {app: demo}
spec:
  runStrategy: Halted
  template:
    spec:
      domain:
        devices: {}
        resources: {requests: {memory: 64Mi}}
"#;

#[test]
fn apply_get_and_delete() {
    let s = BinaryServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("vm.yaml");
    std::fs::write(&file, MANIFEST).expect("manifest");
    let f = file.to_str().expect("utf-8 path");

    let r = cli(&s, &["apply", "-f", f]);
    assert_eq!(
        r.ok(),
        "namespace/dev created\nvirtualmachine.kubevirt.io/vm1 created\n"
    );
    let r = cli(&s, &["apply", "-f", f]);
    assert_eq!(
        r.ok(),
        "namespace/dev unchanged\nvirtualmachine.kubevirt.io/vm1 unchanged\n"
    );
    // From stdin, with a changed label: configured.
    let changed = MANIFEST.replace("app: demo", "app: web");
    let server = s.base();
    let r = run_with(&["apply", "-f", "-", "--server", &server], &[], &changed);
    assert_eq!(
        r.ok(),
        "namespace/dev unchanged\nvirtualmachine.kubevirt.io/vm1 configured\n"
    );

    // Tables with the server's columns, short names, KIND/NAME.
    let table = cli(&s, &["get", "vm"]);
    let lines: Vec<&str> = table.ok().lines().collect();
    assert_eq!(lines.len(), 2, "{table:?}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["NAME", "AGE", "STATUS", "READY"], "{table:?}");
    assert!(lines[1].starts_with("vm1   "), "{table:?}");
    let one = cli(
        &s,
        &["get", "virtualmachines.kubevirt.io/vm1", "--no-headers"],
    );
    assert!(one.ok().starts_with("vm1   "), "{one:?}");
    let all = cli(&s, &["get", "vms", "-A"]);
    assert!(all.ok().starts_with("NAMESPACE   NAME"), "{all:?}");
    assert!(all.stdout.contains("\ndefault     vm1 "), "{all:?}");
    let ns = cli(&s, &["get", "ns", "dev"]);
    assert!(ns.ok().contains("\ndev "), "{ns:?}");

    // Objects as JSON, YAML and names.
    let vm = cli(&s, &["get", "vm", "vm1", "-o", "json"]).json();
    assert_eq!(vm["kind"], "VirtualMachine");
    assert_eq!(vm["metadata"]["labels"]["app"], "web");
    let list = cli(&s, &["get", "vm", "-o", "yaml"]);
    assert!(
        list.ok().starts_with("apiVersion: v1\nitems:\n"),
        "{list:?}"
    );
    assert!(list.stdout.contains("kind: VirtualMachine"), "{list:?}");
    assert!(list.stdout.contains("kind: List"), "{list:?}");
    assert_eq!(
        cli(&s, &["get", "vm", "-o", "name"]).ok(),
        "virtualmachine.kubevirt.io/vm1\n"
    );

    // Empty lists and errors, as kubectl words them.
    let empty = cli(&s, &["get", "vm", "-n", "dev"]);
    assert_eq!(empty.ok(), "");
    assert_eq!(empty.stderr, "No resources found in dev namespace.\n");
    cli(&s, &["get", "vm", "nope"]).failed_with(
        r#"Error from server (NotFound): virtualmachines.kubevirt.io "nope" not found"#,
    );
    cli(&s, &["get", "pods"])
        .failed_with(r#"error: the server doesn't have a resource type "pods""#);

    // Delete: by name, then a missing one.
    let r = cli(&s, &["delete", "vm", "vm1"]);
    assert_eq!(r.ok(), "virtualmachine.kubevirt.io \"vm1\" deleted\n");
    cli(&s, &["get", "vm", "vm1"]).failed_with(
        r#"Error from server (NotFound): virtualmachines.kubevirt.io "vm1" not found"#,
    );
    cli(&s, &["delete", "vm", "vm1"]).failed_with(
        r#"Error from server (NotFound): virtualmachines.kubevirt.io "vm1" not found"#,
    );
    let r = cli(&s, &["delete", "vm", "vm1", "--ignore-not-found"]);
    assert_eq!(r.ok(), "");
    // Delete the objects of a manifest (the VM is gone already: one error, exit 1).
    let r = cli(&s, &["delete", "-f", f]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.stdout, "namespace \"dev\" deleted\n", "{r:?}");
}

#[test]
fn start_stop_restart_and_events() {
    let s = BinaryServer::start();
    let socket = s.dir.path().join("monovirt.sock");
    let socket = socket.to_str().expect("utf-8 path");
    // The Unix socket, named by path and through MONOVIRT_SERVER.
    let env = [("MONOVIRT_SERVER", socket)];
    let manifest = MANIFEST.split("---").nth(1).expect("the VM document");
    let r = run_with(&["apply", "-f", "-"], &env, manifest);
    assert_eq!(r.ok(), "virtualmachine.kubevirt.io/vm1 created\n");
    let strategy = |s: &BinaryServer| {
        cli(s, &["get", "vm", "vm1", "-o", "json"]).json()["spec"]["runStrategy"].clone()
    };

    let r = run_with(&["start", "vm1"], &env, "");
    assert_eq!(r.ok(), "VM vm1 was scheduled to start\n");
    assert_eq!(strategy(&s), "Always");
    let r = cli(&s, &["stop", "vm1"]);
    assert_eq!(r.ok(), "VM vm1 was scheduled to stop\n");
    assert_eq!(strategy(&s), "Halted");
    cli(&s, &["stop", "vm1"]).failed_with("Error from server (Conflict): VM is not running");
    cli(&s, &["restart", "vm1"]).failed_with("Error from server (Conflict): VM is not running");
    cli(&s, &["start", "nope"]).failed_with(
        r#"Error from server (NotFound): virtualmachines.kubevirt.io "nope" not found"#,
    );

    // Each accepted request is an Event about the VM.
    let events = cli(&s, &["get", "events", "-o", "json"]).json();
    let reasons: Vec<&str> = events["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["involvedObject"]["kind"] == "VirtualMachine")
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert!(reasons.contains(&"StartRequested"), "{events}");
    assert!(reasons.contains(&"StopRequested"), "{events}");

    // pause needs a VMI (a running one: tests/subresource_proxy.rs).
    cli(&s, &["pause", "vmi", "ghost"]).failed_with(
        r#"Error from server (NotFound): virtualmachineinstances.kubevirt.io "ghost" not found"#,
    );
}

#[test]
fn unreachable_servers_and_bad_input() {
    let r = run_with(&["get", "vm", "--server", "http://127.0.0.1:1"], &[], "");
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .starts_with("The connection to the server http://127.0.0.1:1 failed"),
        "{r:?}"
    );
    let r = run_with(&["get", "vm", "--server", "ftp://x"], &[], "");
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.starts_with("error: Invalid API server address"),
        "{r:?}"
    );

    let s = BinaryServer::start();
    let server = s.base();
    let r = run_with(
        &["apply", "-f", "-", "--server", &server],
        &[],
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n",
    );
    r.failed_with(r#"error: <stdin>: no matches for kind "Widget" in version "example.com/v1""#);
    let r = run_with(
        &["apply", "-f", "-", "--server", &server],
        &[],
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata: {name: bad}\nspec: {}\n",
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.starts_with("Error from server (Invalid): "),
        "{r:?}"
    );
    let r = run_with(
        &["apply", "-f", "/nonexistent/vm.yaml", "--server", &server],
        &[],
        "",
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .starts_with("error: cannot read /nonexistent/vm.yaml"),
        "{r:?}"
    );
}

#[test]
fn https_with_the_servers_ca_from_the_flag_or_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = BinaryServer::start_with(dir, &["--no-agent", "--tls-listen", "127.0.0.1:0"]);
    let https = format!(
        "https://127.0.0.1:{}",
        s.https.expect("serve printed its HTTPS address").port()
    );
    let ca = s.dir.path().join("tls/ca.crt");
    let ca = ca.to_str().expect("utf-8 path");
    let admin = std::fs::read_to_string(s.dir.path().join("admin-token")).expect("admin token");
    let token = admin.trim();
    let manifest = MANIFEST.split("---").nth(1).expect("the VM document");

    // --ca-file: the server's own CA verifies its certificate.
    let r = run_with(
        &[
            "apply",
            "-f",
            "-",
            "--server",
            &https,
            "--token",
            token,
            "--ca-file",
            ca,
        ],
        &[],
        manifest,
    );
    assert_eq!(r.ok(), "virtualmachine.kubevirt.io/vm1 created\n");
    // MONOVIRT_CA_FILE (with MONOVIRT_SERVER and MONOVIRT_TOKEN), as `monovirt agent` takes it.
    let env = [
        ("MONOVIRT_SERVER", https.as_str()),
        ("MONOVIRT_TOKEN", token),
        ("MONOVIRT_CA_FILE", ca),
    ];
    let vm = run_with(&["get", "vm", "vm1", "-o", "json"], &env, "").json();
    assert_eq!(vm["metadata"]["name"], "vm1");
    let r = run_with(&["start", "vm1"], &env, "");
    assert_eq!(r.ok(), "VM vm1 was scheduled to start\n");
    // The console's WebSocket goes over the same TLS connection set-up: the server answers
    // its upgrade (here with a Status, as there is no such VMI).
    run_with(&["console", "ghost"], &env, "").failed_with(
        r#"Error from server (NotFound): virtualmachineinstances.kubevirt.io "ghost" not found"#,
    );

    // Without the CA the certificate is not trusted (it is not signed by a public root).
    let r = run_with(
        &["get", "vm", "--server", &https, "--token", token],
        &[],
        "",
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .starts_with("error: TLS to the API server failed: TLS handshake with the API server failed: invalid peer certificate"),
        "{r:?}"
    );
    // A CA file that is not there is named.
    let r = run_with(
        &["get", "vm", "--ca-file", "/nonexistent/ca.pem"],
        &[("MONOVIRT_SERVER", https.as_str())],
        "",
    );
    r.failed_with("error: cannot read /nonexistent/ca.pem: No such file or directory (os error 2)");
}
