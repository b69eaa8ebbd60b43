//! The VM threads' seccomp filters (src/vmm/seccomp.rs): a forbidden syscall in a filtered
//! thread kills the process in `kill` mode (checked in a child process, this test binary
//! re-run), every VM thread of a running `monovirt run` carries a filter while the main
//! thread does not, and the test guest boots, does virtio-blk/rng/console I/O and powers
//! off with every filter in `kill` mode, so any syscall the lists miss on that path would
//! have killed it.

mod common;
mod vmm_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "MONOVIRT_SECCOMP_CHILD";

/// The child half: installs the vCPU filter in `kill` mode on a thread, then calls
/// `socket(AF_INET)`, which vCPU threads may not. Only runs when the parent asks.
#[test]
#[ignore = "the child half of kill_mode_kills_the_process_on_a_forbidden_syscall"]
fn child_forbidden_syscall() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    use monovirt::vmm::seccomp::{apply_mode, Mode, ThreadKind};
    std::thread::spawn(|| {
        apply_mode(ThreadKind::Vcpu, Mode::Kill).expect("install the filter");
        println!("filter installed");
        // SAFETY: a plain syscall; the filter ends the process before it returns.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        println!("socket returned {fd}");
    })
    .join()
    .expect("the filtered thread");
}

#[test]
fn kill_mode_kills_the_process_on_a_forbidden_syscall() {
    use std::os::unix::process::ExitStatusExt;
    let out = Command::new(std::env::current_exe().expect("this test binary"))
        .args([
            "child_forbidden_syscall",
            "--exact",
            "--include-ignored",
            "--nocapture",
        ])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::null())
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("filter installed"), "{stdout}");
    assert!(!stdout.contains("socket returned"), "{stdout}");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGSYS),
        "{:?}: {stdout}",
        out.status
    );
}

/// `monovirt run` of the test guest with `seccomp` mode and `cmdline`, COM1 on stdout.
fn run_guest(seccomp: &str, cmdline: &str, extra: &[String]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_monovirt"))
        .args(["run", "--seccomp", seccomp, "--kernel"])
        .arg(common::guest::guest_elf().expect("the test guest builds"))
        .arg("--cmdline")
        .arg(format!("console=ttyS0 {cmdline}"))
        .args(["--cpus", "2", "--memory", "128", "--console", "stdio"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn monovirt run")
}

#[test]
fn guests_boot_and_do_io_with_every_vm_thread_filtered() {
    if !vmm_support::kvm_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = dir.path().join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).expect("disk image");
    let hvc = dir.path().join("hvc0.log");
    let child = run_guest(
        "kill",
        "blkwrite poweroff",
        &[
            format!("--disk={}", disk.display()),
            "--rng".into(),
            format!("--virtio-console=file:{}", hvc.display()),
        ],
    );
    let out = child.wait_with_output().expect("monovirt run");
    let com1 = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{:?}\n{com1}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report = common::guest::Report::parse(&com1);
    assert_eq!(report.get("done"), Some("1"), "{com1}");
    assert!(
        report
            .get("virtio.rng.0")
            .is_some_and(|v| v.ends_with(",ok")),
        "{com1}"
    );
    assert_eq!(
        std::fs::read_to_string(&hvc).expect("hvc0 output"),
        "monovirt-test-guest on hvc\n"
    );
    // The guest's pattern reached the image through the filtered block path.
    let image = std::fs::read(&disk).expect("image");
    assert!(
        (4096..8192).all(|o| image[o] == ((o % 251) as u8) ^ 0x5a),
        "{com1}"
    );
}

/// `Seccomp:` of /proc/<pid>/task/<tid>/status, per thread name.
fn seccomp_per_thread(pid: u32) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let mode = status
            .lines()
            .find_map(|l| l.strip_prefix("Seccomp:"))
            .unwrap_or_default();
        out.push((comm.trim().to_string(), mode.trim().to_string()));
    }
    out
}

#[test]
fn each_vm_thread_runs_under_its_filter_and_the_rest_of_the_process_does_not() {
    if !vmm_support::kvm_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = dir.path().join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).expect("disk image");
    let mut child = run_guest("deny", "tick", &[format!("--disk={}", disk.display())]);
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    // Running: the guest ticks.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let line = lines.next().expect("the guest runs").expect("read COM1");
        if line.starts_with("tick=1") {
            break;
        }
        assert!(Instant::now() < deadline, "no tick");
    }
    let threads = seccomp_per_thread(pid);
    let _ = child.kill();
    let _ = child.wait();
    let mode_of = |prefix: &str| -> Vec<&str> {
        threads
            .iter()
            .filter(|(c, _)| c.starts_with(prefix))
            .map(|(_, m)| m.as_str())
            .collect()
    };
    // 2 = SECCOMP_MODE_FILTER.
    assert_eq!(mode_of("vcpu-"), ["2", "2"], "{threads:?}");
    assert_eq!(mode_of("vmm-"), ["2"], "{threads:?}");
    assert_eq!(mode_of("virtio-"), ["2"], "{threads:?}");
    // The disk's I/O workers: the pool starts with one and grows on demand up to
    // DEFAULT_WORKERS; every one that exists is filtered.
    let workers = mode_of("blk-");
    assert!(
        (1..=devices::virtio::block::DEFAULT_WORKERS).contains(&workers.len()),
        "{threads:?}"
    );
    assert!(workers.iter().all(|mode| *mode == "2"), "{threads:?}");
    assert_eq!(mode_of("monovirt"), ["0"], "{threads:?}");
}
