//! Boot benchmark (`cargo bench --bench boot`): `monovirt run` on the test guest, from
//! process start to the guest's first console line and to its exit, with the process's
//! peak RSS (wait4 rusage); then the daemon's memory overhead per extra VM: RSS growth of
//! this process while 50 VMs run, minus the guest pages they touched (which live in their
//! memfds and show up as shared memory, not as the VMM's own).
//!
//! Prints min/median/max tables. `MONOVIRT_BENCH_RUNS` sets the run count (default 10).
//! A benchmark measures; nothing here asserts a speed.

#[path = "../tests/common/guest.rs"]
#[allow(dead_code, unused_imports)]
mod guest;
#[path = "../tests/vmm_support/mod.rs"]
mod vmm_support;

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use monovirt::vmm::{self, ConsoleConfig, ConsoleRing, VmConfig};

struct Sample {
    first_line: Duration,
    exit: Duration,
    peak_rss_kib: u64,
}

fn run_once(bin: &str, kernel: &std::path::Path, marker: &[u8]) -> Result<Sample> {
    let start = Instant::now();
    let mut child = Command::new(bin)
        .arg("run")
        .arg("--kernel")
        .arg(kernel)
        .args([
            "--cmdline",
            "console=ttyS0 poweroff",
            "--cpus",
            "2",
            "--memory",
            "256",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("spawn monovirt run")?;
    let mut out = child.stdout.take().context("stdout pipe")?;
    let mut first_line = None;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = out.read(&mut buf)?;
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
        // The first complete line starting with `marker` (the last split piece is not
        // complete yet).
        if first_line.is_none()
            && seen
                .split(|b| *b == b'\n')
                .rev()
                .skip(1)
                .any(|l| l.starts_with(marker))
        {
            first_line = Some(start.elapsed());
        }
    }
    let mut status = 0;
    // SAFETY: all-zero is a valid rusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `child.id()` is our unreaped child; status and usage are valid out-pointers.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let exit = start.elapsed();
    ensure!(pid > 0, "wait4: {}", std::io::Error::last_os_error());
    let status = std::process::ExitStatus::from_raw(status);
    ensure!(status.success(), "monovirt run failed: {status}");
    Ok(Sample {
        first_line: first_line.context("guest printed no first line")?,
        exit,
        peak_rss_kib: usage.ru_maxrss as u64,
    })
}

fn stats<T: Copy + PartialOrd>(mut v: Vec<T>) -> (T, T, T) {
    v.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// RssAnon + RssFile of this process (the VMM's own pages; guest memfd pages are RssShmem).
fn own_rss_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let field = |name: &str| -> Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("{name} in /proc/self/status"))?;
        Ok(line.split_whitespace().nth(1).context("value")?.parse()?)
    };
    Ok(field("RssAnon:")? + field("RssFile:")?)
}

fn shmem_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("RssShmem:"))
        .context("RssShmem")?;
    Ok(line.split_whitespace().nth(1).context("value")?.parse()?)
}

fn per_vm_overhead(count: usize) -> Result<(f64, f64)> {
    // A guest that says hello and halts with interrupts off: it stays resident, idle.
    let code = [vmm_support::print(b"up\n"), vec![0xfa, 0xf4, 0xeb, 0xfd]].concat();
    let kernel = vmm_support::TempFile::new("bench-idle", &vmm_support::elf(&code, true));
    // Warm up one VM so one-time costs (signal handler, KVM module state, allocator
    // arenas) are not charged to the 50.
    let warm = boot_idle(&kernel.0, "warm")?;
    let base_own = own_rss_kib()?;
    let base_shmem = shmem_kib()?;
    let mut vms = Vec::new();
    for i in 0..count {
        vms.push(boot_idle(&kernel.0, &format!("bench{i}"))?);
    }
    let own = own_rss_kib()? - base_own;
    let guest = shmem_kib()? - base_shmem;
    for (h, _) in vms.iter().chain(std::iter::once(&warm)) {
        h.kill().ok();
        h.wait();
    }
    Ok((own as f64 / count as f64, guest as f64 / count as f64))
}

fn boot_idle(kernel: &std::path::Path, name: &str) -> Result<(vmm::VmHandle, ConsoleRing)> {
    let ring = ConsoleRing::new(64);
    let h = vmm::create(VmConfig {
        memory_mib: 64,
        console: ConsoleConfig::Ring(ring.clone()),
        ..VmConfig::new(name, kernel)
    })?;
    h.start()?;
    ensure!(
        ring.wait_for("up", Duration::from_secs(60)),
        "{name} did not boot"
    );
    Ok((h, ring))
}

fn main() -> Result<()> {
    let Some(runs) = vmm_support::bench_runs("boot", 10)? else {
        return Ok(());
    };
    let kernel = guest::guest_elf()?;
    let bin = env!("CARGO_BIN_EXE_monovirt");
    // The VMM's own start-up, without guest work: a hand-made guest that prints one line
    // and powers off.
    let tiny = vmm_support::TempFile::new(
        "bench-hello",
        &vmm_support::elf(
            &[
                vmm_support::print(b"hello\n"),
                vmm_support::POWEROFF.to_vec(),
            ]
            .concat(),
            true,
        ),
    );
    for (title, kernel, marker) in [
        (
            "tiny PVH guest (one line, poweroff)",
            tiny.0.as_path(),
            &b"hello"[..],
        ),
        ("test guest (full report)", kernel.as_path(), &b"guest="[..]),
    ] {
        // One untimed run warms the page cache for the binary and the guest.
        run_once(bin, kernel, marker)?;
        let samples: Vec<Sample> = (0..runs)
            .map(|_| run_once(bin, kernel, marker))
            .collect::<Result<_>>()?;
        table(title, runs, &samples);
    }
    per_vm_table()
}

fn table(title: &str, runs: usize, samples: &[Sample]) {
    println!("monovirt run: {title}, 2 vCPUs, 256 MiB, {runs} runs");
    println!("| metric | min | median | max |");
    println!("| --- | --- | --- | --- |");
    let (a, b, c) = stats(samples.iter().map(|s| ms(s.first_line)).collect());
    println!("| time to first guest line (ms) | {a:.2} | {b:.2} | {c:.2} |");
    let (a, b, c) = stats(samples.iter().map(|s| ms(s.exit)).collect());
    println!("| time to exit (ms) | {a:.2} | {b:.2} | {c:.2} |");
    let (a, b, c) = stats(
        samples
            .iter()
            .map(|s| s.peak_rss_kib as f64 / 1024.0)
            .collect(),
    );
    println!("| peak RSS (MiB) | {a:.2} | {b:.2} | {c:.2} |");
    println!();
}

fn per_vm_table() -> Result<()> {
    let count = 50;
    let (own, guest) = per_vm_overhead(count)?;
    println!();
    println!("in-process: {count} idle VMs (1 vCPU, 64 MiB each)");
    println!("| metric | per VM |");
    println!("| --- | --- |");
    println!("| VMM RSS growth, guest pages excluded (KiB) | {own:.1} |");
    println!("| guest pages touched (KiB, memfd) | {guest:.1} |");
    Ok(())
}
