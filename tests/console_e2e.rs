//! The serial console of a real guest, both ways: the test guest's `echo` word answers
//! every line it receives on COM1 with `echo=<line>`, so a line typed into a console
//! comes back only if the bytes reached the guest's serial input and its output reached
//! the client: through `monovirt run`'s stdio console, and through `monovirt console`
//! (CLI → API server's console subresource → node agent's endpoint → VMM's COM1) with the
//! VM applied, paused, unpaused, stopped and deleted with the CLI as well.

mod common;
mod vmm_support;

use common::api::BinaryServer;
use common::guest::{guest_elf, IMAGE};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;
use vmm_support::kvm_available;

/// A hang guard for one wait on the guest, not a timing.
const WAIT: Duration = Duration::from_secs(120);

/// Reads `stdout` on a thread into a channel of chunks.
fn chunks(mut stdout: impl Read + Send + 'static) -> Receiver<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                return;
            }
        }
    });
    rx
}

/// Collects output until it contains `want`; the output so far.
fn until(rx: &Receiver<Vec<u8>>, seen: &mut Vec<u8>, want: &str) -> String {
    while !String::from_utf8_lossy(seen).contains(want) {
        match rx.recv_timeout(WAIT) {
            Ok(c) => seen.extend(c),
            Err(e) => panic!(
                "waiting for {want:?} ({e}); the console showed:\n{}",
                String::from_utf8_lossy(seen)
            ),
        }
    }
    String::from_utf8_lossy(seen).into_owned()
}

/// Kills and reaps a child that runs a guest forever.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn run_console_reaches_the_guest_and_back() {
    if !kvm_available() {
        return;
    }
    let guest = guest_elf().expect("the test guest");
    let mut child = Reaped(
        Command::new(env!("CARGO_BIN_EXE_monovirt"))
            .args(["run", "--cmdline", "console=ttyS0 echo", "--kernel"])
            .arg(&guest)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn monovirt run"),
    );
    let mut stdin = child.0.stdin.take().expect("stdin");
    let rx = chunks(child.0.stdout.take().expect("stdout"));
    let mut seen = Vec::new();
    until(&rx, &mut seen, "echo.ready=1\n");
    stdin.write_all(b"hello guest\n").expect("write");
    stdin.flush().expect("flush");
    until(&rx, &mut seen, "echo=hello guest\n");
    // Control bytes arrive unchanged (the guest prints them escaped).
    stdin.write_all(b"ctl\x01\x7f\r").expect("write");
    stdin.flush().expect("flush");
    let out = until(&rx, &mut seen, "echo=ctl\\x01\\x7f\n");
    assert!(out.contains("action=echo\n"), "{out}");
}

/// `monovirt ARGS --server URL`, stdin from `input`: (exit code, stdout, stderr).
fn cli(server: &str, args: &[&str], input: &str) -> (i32, String, String) {
    let mut all = args.to_vec();
    all.extend(["--server", server]);
    let run = common::cli::run_with(&all, &[], input);
    (run.code, run.stdout, run.stderr)
}

/// Polls `monovirt get vmi NAME -o json` until `ok` holds (a hang guard, not a timing).
fn wait_vmi(server: &str, name: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (code, out, err) = cli(server, &["get", "vmi", name, "-o", "json"], "");
        let v: Value = if code == 0 {
            serde_json::from_str(&out).expect("JSON")
        } else {
            assert!(err.contains("NotFound"), "{err}");
            Value::Null
        };
        if ok(&v) {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: last {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn paused(v: &Value) -> bool {
    v["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Paused" && c["status"] == "True")
    })
}

#[test]
fn cli_console_through_the_api_reaches_the_guest_and_back() {
    if !kvm_available() {
        return;
    }
    let s = BinaryServer::with_guest(&[]);
    let server = s.base();
    let vm = json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "echo"},
        "spec": {"runStrategy": "Always", "template": {"spec": {
            "terminationGracePeriodSeconds": 2,
            "domain": {
                "memory": {"guest": "64Mi"},
                "firmware": {"kernelBoot": {"kernelArgs": "console=ttyS0 echo",
                    "container": {"image": IMAGE, "kernelPath": "/boot/vmlinux"}}},
                "devices": {"autoattachPodInterface": false}}}}},
    });
    let (code, out, err) = cli(&server, &["apply", "-f", "-"], &vm.to_string());
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "virtualmachine.kubevirt.io/echo created\n");
    wait_vmi(&server, "echo", "VMI Running", |v| {
        v["status"]["phase"] == "Running"
    });

    // A line typed into `monovirt console` comes back from the guest.
    let mut console = Reaped(
        Command::new(env!("CARGO_BIN_EXE_monovirt"))
            .args(["console", "echo", "--server", &server])
            .env_remove("MONOVIRT_SERVER")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn monovirt console"),
    );
    let mut stdin = console.0.stdin.take().expect("stdin");
    let rx = chunks(console.0.stdout.take().expect("stdout"));
    let mut seen = Vec::new();
    // The guest's boot report comes first, from the console's buffer.
    until(&rx, &mut seen, "echo.ready=1\n");
    stdin.write_all(b"hello through the api\n").expect("write");
    stdin.flush().expect("flush");
    until(&rx, &mut seen, "echo=hello through the api\n");
    drop(stdin);
    let status = console.0.wait().expect("wait");
    assert!(status.success(), "console exit {status}");

    // Pause and unpause with the CLI: the agent reports the Paused condition.
    let (code, out, err) = cli(&server, &["pause", "vmi", "echo"], "");
    assert_eq!(
        (code, out.as_str()),
        (0, "VMI echo was scheduled to pause\n"),
        "{err}"
    );
    wait_vmi(&server, "echo", "VMI paused", paused);
    let (code, _, err) = cli(&server, &["pause", "vmi", "echo"], "");
    assert_eq!(code, 1);
    assert!(err.contains("VMI is already paused"), "{err}");
    let (code, out, err) = cli(&server, &["unpause", "vmi", "echo"], "");
    assert_eq!(
        (code, out.as_str()),
        (0, "VMI echo was scheduled to unpause\n"),
        "{err}"
    );
    wait_vmi(&server, "echo", "VMI unpaused", |v| !paused(v));

    // Stop, then delete: the VMI goes away.
    let (code, out, err) = cli(&server, &["stop", "echo"], "");
    assert_eq!(
        (code, out.as_str()),
        (0, "VM echo was scheduled to stop\n"),
        "{err}"
    );
    wait_vmi(&server, "echo", "VMI gone", Value::is_null);
    let (code, out, err) = cli(&server, &["delete", "vm", "echo"], "");
    assert_eq!(
        (code, out.as_str()),
        (0, "virtualmachine.kubevirt.io \"echo\" deleted\n"),
        "{err}"
    );
}
