//! The serial console of a real guest, both ways: the test guest's `echo` word answers
//! every line it receives on COM1 with `echo=<line>`, so a line typed into a console
//! comes back only if the bytes reached the guest's serial input and its output reached
//! the client. Here through `monovirt run`'s stdio console; with a node agent, through the
//! console subresource.

mod common;
mod vmm_support;

use common::guest::guest_elf;
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
