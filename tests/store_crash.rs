//! Crash safety of the store: a writer process is SIGKILLed at random moments under
//! concurrent write load, the store is reopened, and every write the writer saw
//! acknowledged must be there.
//!
//! The writer is this test binary itself, re-executed with `MONOVIRT_CRASH_CHILD` set:
//! it opens the store and runs 16 tasks that create objects and bump per-task counters,
//! printing one line per acknowledged write. Bounded: a fixed number of rounds, each
//! killed after at most a second.

mod common;

use common::kinds::VM;
use common::random::random_below;
use monovirt::store::{ListOptions, Objects, Patch, WatchEventType, WriteOptions};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "MONOVIRT_CRASH_CHILD";
const TASKS: usize = 16;
const ROUNDS: usize = 6;

fn vm(name: &str) -> Value {
    json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
           "metadata": {"name": name}, "spec": {"runStrategy": "Halted", "n": 0,
           "padding": "x".repeat(512)}})
}

/// The writer: runs until killed. Prints `create NAME UID RV` and `bump NAME N RV`.
async fn child(dir: &str, round: usize) {
    let objects = Objects::open(std::path::Path::new(dir)).expect("child opens the store");
    let out = std::sync::Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let say = move |line: String| {
        let mut o = out.lock().expect("stdout lock");
        // A leading newline and marker: libtest prints "test … " without a newline.
        writeln!(o, "\n@{line}").expect("stdout");
        o.flush().expect("stdout flush");
    };
    say("ready".into());
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let objects = objects.clone();
        let say = say.clone();
        tasks.push(tokio::spawn(async move {
            let counter = format!("ctr-{t}");
            let opts = WriteOptions::default();
            // The counter object may exist from an earlier round.
            match objects
                .create(&VM, Some("default"), vm(&counter), &opts)
                .await
            {
                Ok(_) => {}
                Err(e) if e.code == 409 => {}
                Err(e) => panic!("creating {counter}: {e}"),
            }
            for i in 0.. {
                let name = format!("r{round}-t{t}-{i}");
                let w = objects
                    .create(&VM, Some("default"), vm(&name), &opts)
                    .await
                    .expect("create");
                say(format!(
                    "create {name} {} {}",
                    w.object["metadata"]["uid"].as_str().unwrap_or(""),
                    w.object["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or("")
                ));
                let cur = objects
                    .get(&VM, Some("default"), &counter)
                    .expect("counter");
                let n = cur["spec"]["n"].as_u64().unwrap_or(0) + 1;
                let w = objects
                    .patch(
                        &VM,
                        Some("default"),
                        &counter,
                        Patch::Merge(json!({"spec": {"n": n}})),
                        &opts,
                    )
                    .await
                    .expect("bump");
                say(format!(
                    "bump {counter} {n} {}",
                    w.object["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or("")
                ));
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer task");
    }
}

/// The writer process, SIGKILLed when dropped (also when a check fails mid-test).
struct Writer(std::process::Child);

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let (dir, round) = spec.split_once(':').expect("dir:round");
        let round = round.parse().expect("round number");
        tokio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(child(dir, round));
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary path");
    let mut created: HashMap<String, (String, u64)> = HashMap::new();
    let mut counters: HashMap<String, u64> = HashMap::new();
    let mut max_rv = 0u64;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "acknowledged_writes_survive_sigkill",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, format!("{}:{round}", dir.path().display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning the writer");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut child = Writer(child);
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait for the writer to open the store, then kill it at a random moment.
        let started = Instant::now();
        loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(l) if l.ends_with("@ready") => break,
                Ok(_) => {}
                Err(e) => panic!("writer did not start: {e}"),
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "writer did not start"
            );
        }
        std::thread::sleep(Duration::from_millis(100 + random_below(900)));
        child.0.kill().expect("SIGKILL");
        child.0.wait().expect("reaped");
        reader.join().expect("reader thread");
        let mut acked = 0;
        for line in rx.try_iter() {
            let Some((_, line)) = line.split_once('@') else {
                continue;
            };
            let parts: Vec<&str> = line.split(' ').collect();
            match parts.as_slice() {
                ["create", name, uid, rv] => {
                    let rv: u64 = rv.parse().expect("rv");
                    max_rv = max_rv.max(rv);
                    created.insert(name.to_string(), (uid.to_string(), rv));
                    acked += 1;
                }
                ["bump", name, n, rv] => {
                    max_rv = max_rv.max(rv.parse().expect("rv"));
                    counters.insert(name.to_string(), n.parse().expect("n"));
                    acked += 1;
                }
                _ => {}
            }
        }
        eprintln!("round {round}: {acked} acknowledged writes before SIGKILL");
    }
    assert!(!created.is_empty(), "the writers acknowledged nothing");

    // Reopen: every acknowledged write must be there.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let objects = Objects::open(dir.path()).expect("reopen after SIGKILL");
        assert!(objects.revision() >= max_rv, "revision went backwards");
        for (name, (uid, rv)) in &created {
            let o = objects
                .get(&VM, Some("default"), name)
                .unwrap_or_else(|e| panic!("acknowledged create of {name} lost: {e}"));
            assert_eq!(o["metadata"]["uid"].as_str(), Some(uid.as_str()), "{name}");
            assert_eq!(o["metadata"]["resourceVersion"], rv.to_string(), "{name}");
        }
        for (name, n) in &counters {
            let o = objects.get(&VM, Some("default"), name).expect("counter");
            let stored = o["spec"]["n"].as_u64().expect("n");
            assert!(stored >= *n, "{name}: acknowledged {n}, stored {stored}");
        }
        // The watch log is intact: replaying it yields strictly increasing revisions up
        // to the store's revision, and the new process can write.
        let list = objects
            .list(&VM, None, &ListOptions::default())
            .expect("list");
        assert!(list.items.len() >= created.len());
        // Revision 1 is the default namespace; "0" would mean a synthetic list instead.
        let from = objects.compacted_revision().expect("compacted").max(1);
        let end = objects.revision();
        let mut w = objects
            .watch(
                &VM,
                None,
                &ListOptions {
                    resource_version: Some(from.to_string()),
                    ..Default::default()
                },
            )
            .expect("watch from the log start");
        let mut last = from;
        while last < end {
            let e = tokio::time::timeout(Duration::from_secs(10), w.recv())
                .await
                .expect("log replay keeps up")
                .expect("stream open");
            assert_ne!(e.type_, WatchEventType::Error, "{:?}", e.object);
            let rv: u64 = e.object["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .expect("rv");
            assert!(
                rv > last,
                "log revisions increase: {rv} after {last}: {:?} {}",
                e.type_,
                e.object["metadata"]
            );
            last = rv;
        }
        objects
            .create(
                &VM,
                Some("default"),
                vm("after-crash"),
                &WriteOptions::default(),
            )
            .await
            .expect("writes work after recovery");
    });
}
