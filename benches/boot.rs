//! Boot benchmark (`cargo bench --bench boot`): `monovirt run` on the test guest, from
//! process start to the guest's first console line and to its exit, with the process's
//! peak RSS, CPU time and page faults; then the daemon's memory overhead per extra VM: RSS
//! growth of this process while 50 VMs run, minus the guest pages they touched (which
//! live in their memfds and show up as shared memory, not as the VMM's own).
//!
//! Peak RSS is the child's own `VmHWM`, read from /proc when its main thread stops at
//! its exit (ptrace `PTRACE_O_TRACEEXIT`, before its memory is released). Not
//! `wait4`'s `ru_maxrss`: the kernel folds the RSS of the address space a process was
//! exec'ed from into it, and posix_spawn/vfork exec from this harness's own (larger)
//! address space, so `ru_maxrss` would report the harness, not `monovirt run`.
//!
//! After each table one more, untimed run shows where the pages behind that peak are
//! (boot/resident.rs): per ELF section of the binary and of each shared library, the
//! heap, thread stacks and guest memory, file-backed and anonymous, at the exit stop.
//!
//! Prints min/median/max tables with the load average; CPU time (user + sys) is what
//! load distorts least. `MONOVIRT_BENCH_RUNS` sets the run count (default 10).
//! A benchmark measures; nothing here asserts a speed.

#[path = "../tests/common/guest.rs"]
#[allow(dead_code, unused_imports)]
mod guest;
#[path = "boot/resident.rs"]
mod resident;
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
    /// `VmHWM` of the child's own address space.
    peak_rss_kib: u64,
    /// RssAnon, RssFile and RssShmem when its main thread exits.
    rss_at_exit_kib: [u64; 3],
    cpu: Duration,
    minor_faults: u64,
    /// Where its pages were at the exit stop, if asked for.
    residency: Option<resident::Residency>,
}

fn status_kib(status: &str, name: &str) -> Result<u64> {
    let line = status
        .lines()
        .find(|l| l.starts_with(name))
        .with_context(|| format!("{name} in /proc/PID/status"))?;
    Ok(line.split_whitespace().nth(1).context("value")?.parse()?)
}

fn timeval(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
}

/// Reads `monovirt run`'s stdout until EOF; the time of the first complete line that
/// starts with `marker`.
fn first_line(mut out: impl Read, start: Instant, marker: &[u8]) -> Option<Duration> {
    let mut first_line = None;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = out.read(&mut buf) {
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
        // The last split piece is not a complete line yet.
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
    first_line
}

/// One `monovirt run`; with `breakdown`, it also reads where the child's pages are at
/// its exit stop (which takes a few milliseconds of the measured exit time).
fn run_once(bin: &str, kernel: &std::path::Path, marker: &[u8], breakdown: bool) -> Result<Sample> {
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
    let pid = child.id() as libc::pid_t;
    // Trace only the exit of its main thread: no syscall stops, no other threads.
    // SAFETY: `pid` is our running, unreaped child; SEIZE takes no pointers.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_SEIZE,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            libc::PTRACE_O_TRACEEXIT as usize as *mut libc::c_void,
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        let _ = child.kill();
        let _ = child.wait();
        anyhow::bail!("ptrace(PTRACE_SEIZE) of monovirt run: {e}");
    }
    let out = child.stdout.take().context("stdout pipe")?;
    let marker = marker.to_vec();
    // The stopped child still holds its stdout open: read it on another thread.
    let reader = std::thread::spawn(move || first_line(out, start, &marker));
    let exit_status;
    let mut peak_rss_kib = None;
    let mut rss_at_exit_kib = [0; 3];
    let mut residency = None;
    let mut usage: libc::rusage;
    loop {
        let mut status = 0;
        // SAFETY: all-zero is a valid rusage.
        usage = unsafe { std::mem::zeroed() };
        // SAFETY: `pid` is our traced child; status and usage are valid out-pointers.
        let got = unsafe { libc::wait4(pid, &mut status, libc::__WALL, &mut usage) };
        ensure!(got == pid, "wait4: {}", std::io::Error::last_os_error());
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            exit_status = status;
            break;
        }
        let mut signal = 0;
        if status >> 8 == libc::SIGTRAP | (libc::PTRACE_EVENT_EXIT << 8) {
            // Stopped in do_exit before its memory goes: VmHWM is final.
            let st = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
            peak_rss_kib = Some(status_kib(&st, "VmHWM:")?);
            rss_at_exit_kib = [
                status_kib(&st, "RssAnon:")?,
                status_kib(&st, "RssFile:")?,
                status_kib(&st, "RssShmem:")?,
            ];
            if breakdown {
                let program = std::fs::canonicalize(bin)?;
                residency = Some(resident::read(pid, &program)?);
            }
        } else if libc::WIFSTOPPED(status) && status >> 16 == 0 {
            // A signal-delivery stop: hand the signal on.
            signal = libc::WSTOPSIG(status);
        }
        // SAFETY: `pid` is in a ptrace stop; CONT takes the signal to deliver, no pointers.
        unsafe {
            libc::ptrace(
                libc::PTRACE_CONT,
                pid,
                std::ptr::null_mut::<libc::c_void>(),
                signal as usize as *mut libc::c_void,
            )
        };
    }
    let exit = start.elapsed();
    let first_line = reader.join().expect("the stdout reader does not panic");
    let status = std::process::ExitStatus::from_raw(exit_status);
    ensure!(status.success(), "monovirt run failed: {status}");
    Ok(Sample {
        first_line: first_line.context("guest printed no first line")?,
        exit,
        peak_rss_kib: peak_rss_kib.context("no exit stop: VmHWM unknown")?,
        rss_at_exit_kib,
        cpu: timeval(usage.ru_utime) + timeval(usage.ru_stime),
        minor_faults: usage.ru_minflt as u64,
        residency,
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
        run_once(bin, kernel, marker, false)?;
        let samples: Vec<Sample> = (0..runs)
            .map(|_| run_once(bin, kernel, marker, false))
            .collect::<Result<_>>()?;
        table(title, runs, &samples);
        // And one more, untimed, to show where the resident pages are.
        let last = run_once(bin, kernel, marker, true)?;
        if let Some(r) = last.residency {
            r.print(
                &format!(
                    "monovirt run: {title}: resident pages at exit (VmHWM {:.2} MiB)",
                    last.peak_rss_kib as f64 / 1024.0
                ),
                18,
            );
        }
    }
    per_vm_table()
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn table(title: &str, runs: usize, samples: &[Sample]) {
    println!(
        "monovirt run: {title}, 2 vCPUs, 256 MiB, {runs} runs (load average {})",
        load_average()
    );
    println!("| metric | min | median | max |");
    println!("| --- | --- | --- | --- |");
    let row = |name: &str, values: Vec<f64>| {
        let (a, b, c) = stats(values);
        println!("| {name} | {a:.2} | {b:.2} | {c:.2} |");
    };
    row(
        "time to first guest line (ms)",
        samples.iter().map(|s| ms(s.first_line)).collect(),
    );
    row(
        "time to exit (ms)",
        samples.iter().map(|s| ms(s.exit)).collect(),
    );
    row(
        "CPU time, user + sys, all threads (ms)",
        samples.iter().map(|s| ms(s.cpu)).collect(),
    );
    row(
        "minor page faults",
        samples.iter().map(|s| s.minor_faults as f64).collect(),
    );
    row(
        "peak RSS, VmHWM (MiB)",
        samples
            .iter()
            .map(|s| s.peak_rss_kib as f64 / 1024.0)
            .collect(),
    );
    for (i, name) in ["anon", "file (binary, libraries)", "shmem (guest)"]
        .iter()
        .enumerate()
    {
        row(
            &format!("RSS at exit, {name} (MiB)"),
            samples
                .iter()
                .map(|s| s.rss_at_exit_kib[i] as f64 / 1024.0)
                .collect(),
        );
    }
    println!();
}

fn per_vm_table() -> Result<()> {
    let count = 50;
    let (own, guest) = per_vm_overhead(count)?;
    println!(
        "in-process: {count} idle VMs (1 vCPU, 64 MiB each; load average {})",
        load_average()
    );
    println!("| metric | per VM |");
    println!("| --- | --- |");
    println!("| VMM RSS growth, guest pages excluded (KiB) | {own:.1} |");
    println!("| guest pages touched (KiB, memfd) | {guest:.1} |");
    Ok(())
}
