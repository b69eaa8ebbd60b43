//! Orchestration benchmark (`cargo bench --bench orchestration`): what the control plane
//! adds to a boot, with the real `monovirt serve` (API, VM controller, scheduler, local
//! node agent, in-process VMM) and the test guest booted through `kernelBoot` from an
//! imported image.
//!
//! 1. POST → ready, one VM at a time (20 by default): from the VM's POST to its VMI's
//!    phase Running (seen on a watch) and to the guest's `done=1` line (its last report
//!    line) read through the console subresource; against `monovirt run` of the same
//!    guest with the same command line, vCPUs and memory, from process start to the same
//!    line.
//! 2. Boot storm: 100 small VMs POSTed at once (concurrently), each booting a hand-made
//!    guest that prints `done=1` and halts (so the storm measures the control plane and
//!    the VMM's start-up, not 100 self-tests sharing two cores); time until every VMI is
//!    Running and until every guest printed `done=1`, and the daemon's RSS (its own
//!    pages, and guest memory in memfds) with all of them up.
//!
//! Prints tables. `MONOVIRT_BENCH_RUNS` sets the VM count of part 1 (default 20),
//! `MONOVIRT_BENCH_STORM` the storm's size (default 100). A benchmark measures; nothing
//! here asserts a speed.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;
#[path = "../tests/vmm_support/mod.rs"]
mod vmm_support;

use anyhow::{bail, ensure, Context, Result};
use common::api::{delete, get, post, BinaryServer, Watch, VMIS, VMS};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const IMAGE: &str = "monovirt/test-guest:1";
/// A hand-made guest that prints `done=1` and halts: the storm measures the control
/// plane and the VMM's start-up, not 100 test guests' self-tests on two cores.
const TINY_IMAGE: &str = "monovirt/tiny-guest:1";
const SUB_VMIS: &str =
    "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachineinstances";
/// The guest's last report line.
const READY: &str = "done=1";
/// A hang guard, not a speed limit.
const DEADLINE: Duration = Duration::from_secs(300);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `(p50, p95, max)` in ms.
fn percentiles(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let at = |q: f64| {
        let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
        ms(v[i])
    };
    (at(0.50), at(0.95), ms(v[v.len() - 1]))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// A VM booting the test guest (`hang`: it stays up after its report).
fn guest_vm(name: &str, cpus: u32, memory: &str) -> Value {
    vm_of(name, IMAGE, cpus, memory)
}

/// A VM booting `image`'s `/boot/vmlinux`.
fn vm_of(name: &str, image: &str, cpus: u32, memory: &str) -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"runStrategy": "Always", "template": {"spec": {
            "terminationGracePeriodSeconds": 0,
            "domain": {
                "cpu": {"sockets": 1, "cores": cpus, "threads": 1},
                "memory": {"guest": memory},
                "firmware": {"kernelBoot": {"kernelArgs": "console=ttyS0 hang",
                    "container": {"image": image, "kernelPath": "/boot/vmlinux"}}},
                "devices": {"autoattachPodInterface": false}}}}},
    })
}

/// Reads the console of `vmi` until [`READY`].
async fn console_ready(addr: SocketAddr, vmi: &str) -> Result<()> {
    let url = format!("ws://{addr}{SUB_VMIS}/{vmi}/console");
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .context("console WebSocket")?;
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !text.contains(READY) {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => text.push_str(&String::from_utf8_lossy(&b)),
            Ok(Some(Ok(_))) => {}
            other => bail!("console of {vmi} ended before {READY}: {other:?}; got {text}"),
        }
    }
    let _ = ws.close(None).await;
    Ok(())
}

/// Reads VMI watch events until `done` says the awaited state is reached.
async fn watch_until(watch: &mut Watch, mut done: impl FnMut(&Value) -> bool) -> Result<()> {
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline {
        let event = watch.next().await.context("the watch ended")?;
        if done(&event) {
            return Ok(());
        }
    }
    bail!("not reached within {DEADLINE:?}")
}

async fn resource_version(addr: SocketAddr) -> Result<String> {
    let list = get(addr, VMIS).await.json();
    Ok(list["metadata"]["resourceVersion"]
        .as_str()
        .context("list resourceVersion")?
        .to_string())
}

async fn wait_gone(addr: SocketAddr, path: &str) -> Result<()> {
    let deadline = Instant::now() + DEADLINE;
    while get(addr, path).await.code() != 404 {
        ensure!(Instant::now() < deadline, "{path} was not deleted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// `monovirt run` of the same guest: process start → [`READY`].
fn bare_boot(bin: &str, kernel: &Path, cpus: u32, memory_mib: u32) -> Result<Duration> {
    let start = Instant::now();
    let mut child = Command::new(bin)
        .args(["run", "--kernel"])
        .arg(kernel)
        .args(["--cmdline", "console=ttyS0 poweroff"])
        .args([
            "--cpus",
            &cpus.to_string(),
            "--memory",
            &memory_mib.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("spawn monovirt run")?;
    let mut out = child.stdout.take().context("stdout")?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let mut ready = None;
    loop {
        let n = out.read(&mut buf)?;
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
        if ready.is_none() && seen.windows(READY.len() + 1).any(|w| w == b"done=1\n") {
            ready = Some(start.elapsed());
        }
    }
    ensure!(child.wait()?.success(), "monovirt run failed");
    ready.context("the guest printed no done=1")
}

/// Part 1: POST → Running / ready, one VM at a time.
async fn post_to_ready(s: &BinaryServer, runs: usize, kernel: &Path) -> Result<()> {
    let addr = s.addr;
    let bin = env!("CARGO_BIN_EXE_monovirt");
    let (cpus, memory_mib) = (2, 64);
    // Warm-up, untimed: page cache, image store, first-VM costs.
    bare_boot(bin, kernel, cpus, memory_mib)?;
    one_vm(addr, "warm", cpus, memory_mib).await?;
    let (mut running, mut ready, mut bare) = (Vec::new(), Vec::new(), Vec::new());
    let load = load_average();
    for i in 0..runs {
        bare.push(bare_boot(bin, kernel, cpus, memory_mib)?);
        let (r, d) = one_vm(addr, &format!("vm{i}"), cpus, memory_mib).await?;
        running.push(r);
        ready.push(d);
    }
    println!(
        "POST → ready, {runs} VMs one at a time (test guest, {cpus} vCPUs, {memory_mib} MiB; load average {load})"
    );
    println!("| path | p50 (ms) | p95 (ms) | max (ms) |");
    println!("| --- | --- | --- | --- |");
    let (a, b, c) = percentiles(running);
    println!("| POST VM → VMI Running (watch) | {a:.1} | {b:.1} | {c:.1} |");
    let (a, b, c) = percentiles(ready.clone());
    println!("| POST VM → guest `done=1` (console subresource) | {a:.1} | {b:.1} | {c:.1} |");
    let (ba, bb, bc) = percentiles(bare);
    println!("| `monovirt run` start → guest `done=1` | {ba:.1} | {bb:.1} | {bc:.1} |");
    println!("| ratio orchestrated / bare (p50) | {:.2} | | |", a / ba);
    println!();
    Ok(())
}

/// POSTs one VM and times Running and ready; deletes it again (untimed).
async fn one_vm(
    addr: SocketAddr,
    name: &str,
    cpus: u32,
    memory_mib: u32,
) -> Result<(Duration, Duration)> {
    let rv = resource_version(addr).await?;
    let mut watch = Watch::start(
        addr,
        &format!("{VMIS}?watch=true&fieldSelector=metadata.name%3D{name}&resourceVersion={rv}"),
        "application/json",
    )
    .await;
    let start = Instant::now();
    let r = post(addr, VMS, &guest_vm(name, cpus, &format!("{memory_mib}Mi"))).await;
    ensure!(r.code() == 201, "POST {name}: {}", r.text());
    watch_until(&mut watch, |e| e["object"]["status"]["phase"] == "Running").await?;
    let running = start.elapsed();
    console_ready(addr, name).await?;
    let ready = start.elapsed();
    ensure!(delete(addr, &format!("{VMS}/{name}"), None).await.code() == 200);
    wait_gone(addr, &format!("{VMIS}/{name}")).await?;
    Ok((running, ready))
}

/// RssAnon + RssFile (the daemon's own pages) and RssShmem (guest memfds) of `pid`, KiB.
fn rss_kib(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("{name} in /proc/{pid}/status"))?;
        Ok(line.split_whitespace().nth(1).context("value")?.parse()?)
    };
    Ok((field("RssAnon:")? + field("RssFile:")?, field("RssShmem:")?))
}

/// Part 2: `count` VMs POSTed at once.
async fn storm(s: &BinaryServer, count: usize) -> Result<()> {
    let addr = s.addr;
    let pid = s.child.id();
    let (idle_own, _) = rss_kib(pid)?;
    let rv = resource_version(addr).await?;
    let mut watch = Watch::start(
        addr,
        &format!("{VMIS}?watch=true&resourceVersion={rv}"),
        "application/json",
    )
    .await;
    let load = load_average();
    let start = Instant::now();
    let posts: Vec<_> = (0..count)
        .map(|i| {
            tokio::spawn(async move {
                // 10 millicores each: the default charge of 100m per vCPU would fit
                // only 20 of them on two cores.
                let mut vm = vm_of(&format!("storm{i}"), TINY_IMAGE, 1, "32Mi");
                vm["spec"]["template"]["spec"]["domain"]["resources"] =
                    json!({"requests": {"cpu": "10m"}});
                post(addr, VMS, &vm).await.code()
            })
        })
        .collect();
    for p in posts {
        ensure!(p.await? == 201, "a storm POST failed");
    }
    let posted = start.elapsed();
    // When each VMI was first seen created (by the VM controller), Scheduled (bound by the
    // scheduler) and Running (started by the node agent): where the time goes.
    let mut seen: [BTreeMap<String, Duration>; 3] = Default::default();
    watch_until(&mut watch, |e| {
        let Some(n) = e["object"]["metadata"]["name"].as_str() else {
            return false;
        };
        let at = start.elapsed();
        seen[0].entry(n.to_string()).or_insert(at);
        match e["object"]["status"]["phase"].as_str() {
            Some("Scheduled") => {
                seen[1].entry(n.to_string()).or_insert(at);
            }
            Some("Running") => {
                seen[1].entry(n.to_string()).or_insert(at);
                seen[2].entry(n.to_string()).or_insert(at);
            }
            _ => {}
        }
        seen[2].len() == count
    })
    .await?;
    let all_running = start.elapsed();
    let [created, scheduled, running] = seen;
    let stage = |m: BTreeMap<String, Duration>| {
        let (p50, p95, max) = percentiles(m.into_values().collect());
        format!("{p50:.0} / {p95:.0} / {max:.0}")
    };
    let (created, scheduled) = (stage(created), stage(scheduled));
    let (p50, p95, _) = percentiles(running.into_values().collect());
    let consoles: Vec<_> = (0..count)
        .map(|i| tokio::spawn(async move { console_ready(addr, &format!("storm{i}")).await }))
        .collect();
    for c in consoles {
        c.await??;
    }
    let all_ready = start.elapsed();
    let (own, shmem) = rss_kib(pid)?;
    println!("boot storm: {count} VMs POSTed at once (tiny guest: prints done=1, halts; 1 vCPU, 32 MiB; load average at start {load})");
    println!("| metric | value |");
    println!("| --- | --- |");
    println!("| all POSTs answered (ms) | {:.0} |", ms(posted));
    println!("| VMI created (VM controller), p50 / p95 / max (ms) | {created} |");
    println!("| VMI Scheduled (scheduler), p50 / p95 / max (ms) | {scheduled} |");
    println!("| one VMI Running, p50 / p95 (ms) | {p50:.0} / {p95:.0} |");
    println!("| all VMIs Running (ms) | {:.0} |", ms(all_running));
    println!(
        "| VMs/s to Running | {:.1} |",
        count as f64 / all_running.as_secs_f64()
    );
    println!("| all guests `done=1` (ms) | {:.0} |", ms(all_ready));
    println!(
        "| daemon RSS, own pages, idle → {count} VMs (MiB) | {:.1} → {:.1} |",
        idle_own as f64 / 1024.0,
        own as f64 / 1024.0
    );
    println!(
        "| daemon RSS, guest memory in memfds (MiB) | {:.1} |",
        shmem as f64 / 1024.0
    );
    println!();
    for i in 0..count {
        delete(addr, &format!("{VMS}/storm{i}"), None).await;
    }
    for i in 0..count {
        wait_gone(addr, &format!("{VMIS}/storm{i}")).await?;
    }
    Ok(())
}

fn main() -> Result<()> {
    let Some(runs) = vmm_support::bench_runs("orchestration", 20)? else {
        return Ok(());
    };
    let storm_size = std::env::var("MONOVIRT_BENCH_STORM")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100usize)
        .max(1);
    let kernel = common::guest::guest_elf()?;
    let tiny = vmm_support::TempFile::new(
        "bench-storm",
        &vmm_support::elf(
            &[
                vmm_support::print(b"done=1\n"),
                // cli; hlt; jmp $-1: halted for good.
                vec![0xfa, 0xf4, 0xeb, 0xfd],
            ]
            .concat(),
            true,
        ),
    );
    let dir = tempfile::tempdir()?;
    for (image, path) in [(IMAGE, kernel.as_path()), (TINY_IMAGE, tiny.0.as_path())] {
        let out = Command::new(env!("CARGO_BIN_EXE_monovirt"))
            .args(["image", "import", "--data-dir"])
            .arg(dir.path())
            .arg(image)
            .arg(path)
            .args(["--dest", "/boot/vmlinux"])
            .output()?;
        ensure!(
            out.status.success(),
            "image import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let s = BinaryServer::start_with(dir, &["--node-name", "bench"]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let node = get(s.addr, "/api/v1/nodes/bench").await;
            if node.code() == 200 {
                break;
            }
            ensure!(Instant::now() < deadline, "the node did not register");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        post_to_ready(&s, runs, &kernel).await?;
        storm(&s, storm_size).await
    })
}
