//! Shared by the nested-KVM tiers (`linux_tier.rs`: x86_64 L1 with kvm_amd,
//! `ppc64le_tier.rs`: pseries L1 with kvm_hv): each boots a Debian kernel as L1 in QEMU
//! (TCG) whose init (`tests/linux/*l1-init.sh`) runs `monovirt run` scenarios and prints
//! `MONOVIRT-…` marker lines on the serial console. Here: the work folders, staging files
//! into L1's initramfs, running QEMU bounded by a timeout, reading the markers and each
//! scenario's output back, the checks every L1 boot must pass, and the failure report.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Lines of the serial log quoted in a failure message.
pub const LOG_TAIL_LINES: usize = 80;

/// The repository's root folder.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Checks that `qemu` runs (naming the Debian `package` if not), then runs the cached,
/// idempotent `scripts/fetch-guest-artifacts.sh` with `args`, and returns the artifacts
/// folder it filled (MONOVIRT_GUEST_ARTIFACTS, by default target/guest-artifacts).
pub fn fetch_guest_artifacts(qemu: &str, package: &str, args: &[&str]) -> Result<PathBuf> {
    let version = Command::new(qemu)
        .arg("--version")
        .output()
        .with_context(|| format!("{qemu} not found (package {package})"))?;
    anyhow::ensure!(version.status.success(), "{qemu} --version failed");

    let dir = match std::env::var_os("MONOVIRT_GUEST_ARTIFACTS") {
        Some(dir) => PathBuf::from(dir),
        None => repo().join("target/guest-artifacts"),
    };
    let fetch = Command::new("bash")
        .arg(repo().join("scripts/fetch-guest-artifacts.sh"))
        .args(args)
        .env("MONOVIRT_GUEST_ARTIFACTS", &dir)
        .stdin(Stdio::null())
        .output()
        .context("cannot run scripts/fetch-guest-artifacts.sh")?;
    anyhow::ensure!(
        fetch.status.success(),
        "scripts/fetch-guest-artifacts.sh{} failed ({}):\n{}",
        args.iter().map(|a| format!(" {a}")).collect::<String>(),
        fetch.status,
        String::from_utf8_lossy(&fetch.stderr)
    );
    Ok(dir)
}

/// Whether the CI setting `MONOVIRT_REQUIRE_KVM=1` forbids skipping a tier.
pub fn require_kvm() -> bool {
    std::env::var("MONOVIRT_REQUIRE_KVM").is_ok_and(|v| v == "1")
}

/// What `prepare` made ready for `tier` (as "the real-Linux tier"), or `None` after
/// printing why it cannot run here (a panic under `MONOVIRT_REQUIRE_KVM=1`).
pub fn prepare_or_skip<T>(
    test: &str,
    tier: &str,
    prepare: impl FnOnce() -> Result<T>,
) -> Option<T> {
    match prepare() {
        Ok(ready) => Some(ready),
        Err(err) if require_kvm() => {
            panic!("{test}: {tier} cannot run with MONOVIRT_REQUIRE_KVM=1: {err:#}")
        }
        Err(err) => {
            // Written to the process's stderr, past the test harness's capture, so that
            // a skip shows in a plain `cargo test` run.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: {tier} cannot run here: {err:#}\n\
                 (install its needs with scripts/setup.sh; MONOVIRT_REQUIRE_KVM=1 turns \
                 this skip into a failure)"
            );
            None
        }
    }
}

/// A work folder of one test of `tier` under target/tmp, emptied first.
pub fn work_dir(tier: &str, test: &str) -> Result<PathBuf> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(tier).join(test);
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("cannot empty {}", dir.display()))?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// Copies `from` to the absolute path `to` inside the staging folder `stage`.
pub fn copy_into(stage: &Path, from: &Path, to: &str) -> Result<()> {
    let dst = stage.join(to.trim_start_matches('/'));
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::copy(from, &dst)
        .with_context(|| format!("cannot copy {} to {}", from.display(), dst.display()))?;
    Ok(())
}

/// Finishes L1's initramfs: writes `scenarios`, if any, as the staged `/etc/scenarios.sh`
/// (which the L1 init sources), packs the staging folder as a newc cpio (owned by root, in a stable
/// order) and appends it to the tier's base initramfs `l1_base` (the kernel unpacks
/// concatenated archives in order, so staged files win). The staging folder is removed.
pub fn pack_l1_initrd(
    work: &Path,
    stage: &Path,
    scenarios: Option<&str>,
    l1_base: &Path,
) -> Result<PathBuf> {
    if let Some(script) = scenarios {
        fs::create_dir_all(stage.join("etc"))?;
        fs::write(stage.join("etc/scenarios.sh"), script)?;
    }

    let overlay = work.join("l1-overlay.cpio");
    let cpio = Command::new("sh")
        .args([
            "-c",
            "find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0",
        ])
        .current_dir(stage)
        .stdout(File::create(&overlay)?)
        .status()
        .context("cannot run cpio")?;
    anyhow::ensure!(cpio.success(), "cpio of the L1 overlay failed");

    let initrd = work.join("l1-initrd.cpio");
    let mut out = File::create(&initrd)?;
    for part in [l1_base, overlay.as_path()] {
        std::io::copy(&mut File::open(part)?, &mut out)?;
    }
    std::io::Write::flush(&mut out)?;
    fs::remove_dir_all(stage)?;
    fs::remove_file(&overlay)?;
    Ok(initrd)
}

/// Kills QEMU when a test ends early.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// What one QEMU boot left behind.
pub struct QemuRun {
    /// QEMU's exit status, or `None` when it was stopped at the timeout.
    pub status: Option<ExitStatus>,
    pub timeout: Duration,
    pub elapsed: Duration,
    pub log_path: PathBuf,
    /// The serial console, with carriage returns removed.
    pub serial: String,
}

impl QemuRun {
    pub fn markers(&self) -> Vec<Marker> {
        self.serial.lines().filter_map(Marker::parse).collect()
    }

    pub fn tail(&self) -> String {
        let lines: Vec<&str> = self.serial.lines().collect();
        let start = lines.len().saturating_sub(LOG_TAIL_LINES);
        format!(
            "--- last {} lines of {} ---\n{}",
            lines.len() - start,
            self.log_path.display(),
            lines[start..].join("\n")
        )
    }
}

/// Runs `qemu` (its machine, kernel and initrd set) bounded by `timeout`, logging as
/// `tier`; the serial console goes to `work/log_name`, QEMU's own messages to
/// `work/log_name.qemu`.
pub fn run_qemu(
    tier: &str,
    mut qemu: Command,
    work: &Path,
    log_name: &str,
    timeout: Duration,
) -> Result<QemuRun> {
    let kernel = qemu
        .get_args()
        .skip_while(|arg| *arg != "-kernel")
        .nth(1)
        .map(|k| k.to_string_lossy().into_owned())
        .unwrap_or_default();
    let log_path = work.join(log_name);
    let start = Instant::now();
    let child = qemu
        .stdin(Stdio::null())
        .stdout(File::create(&log_path)?)
        .stderr(File::create(work.join(format!("{log_name}.qemu")))?)
        .spawn()
        .with_context(|| format!("cannot start {}", qemu.get_program().to_string_lossy()))?;
    let mut qemu = Guard(child);
    let status = loop {
        if let Some(status) = qemu.0.try_wait()? {
            break Some(status);
        }
        if start.elapsed() > timeout {
            qemu.0.kill()?;
            qemu.0.wait()?;
            break None;
        }
        thread::sleep(Duration::from_millis(100));
    };
    let run = QemuRun {
        status,
        timeout,
        elapsed: start.elapsed(),
        serial: String::from_utf8_lossy(&fs::read(&log_path)?).replace('\r', ""),
        log_path,
    };
    println!(
        "{tier}: QEMU ran {kernel} {:.1} s ({}); serial log {}",
        run.elapsed.as_secs_f64(),
        match run.status {
            Some(status) => status.to_string(),
            None => format!("stopped after the {} s timeout", timeout.as_secs()),
        },
        run.log_path.display()
    );
    Ok(run)
}

/// One `MONOVIRT-…` line: its name and its `key=value` fields.
#[derive(Debug)]
pub struct Marker {
    pub name: String,
    pub fields: BTreeMap<String, String>,
}

impl Marker {
    /// The marker in a line, which may carry other output (terminal escapes, a kernel
    /// message) before it.
    pub fn parse(line: &str) -> Option<Self> {
        let at = line.find("MONOVIRT-")?;
        let mut words = line[at..].split_whitespace();
        let name = words.next()?.to_string();
        let fields = words
            .filter_map(|word| word.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Some(Marker { name, fields })
    }

    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }
}

pub fn find<'a>(markers: &'a [Marker], name: &str) -> Option<&'a Marker> {
    markers.iter().find(|m| m.name == name)
}

/// The serial output of one scenario: between its BEGIN and END lines.
pub struct ScenarioRun<'a> {
    /// `monovirt run`'s exit code, or `None` when L1 never reached the END line.
    pub rc: Option<i32>,
    pub text: Vec<&'a str>,
    pub markers: Vec<Marker>,
    /// Seconds on L1's clock (emulated time, for the log only).
    pub seconds: Option<f64>,
}

pub fn scenario_run<'a>(serial: &'a str, name: &str) -> Option<ScenarioRun<'a>> {
    let mut lines = serial.lines().skip_while(|line| {
        Marker::parse(line)
            .is_none_or(|m| m.name != "MONOVIRT-L1-SCENARIO-BEGIN" || m.field("name") != Some(name))
    });
    lines.next()?;
    let mut text = Vec::new();
    let mut end = None;
    for line in lines {
        match Marker::parse(line) {
            Some(m) if m.name == "MONOVIRT-L1-SCENARIO-END" => {
                end = Some(m);
                break;
            }
            _ => text.push(line),
        }
    }
    let markers = text.iter().filter_map(|line| Marker::parse(line)).collect();
    let rc = end.as_ref().and_then(|m| m.field("rc")?.parse().ok());
    let seconds = end.as_ref().and_then(|m| {
        let start: f64 = m.field("start")?.parse().ok()?;
        let end: f64 = m.field("end")?.parse().ok()?;
        Some(end - start)
    });
    Some(ScenarioRun {
        rc,
        text,
        markers,
        seconds,
    })
}

/// Lines of a killed scenario's own output quoted after its threads' report.
const HANG_TAIL_LINES: usize = 20;

/// What L1's init reported about a scenario it killed at its timeout: each monovirt
/// thread's state and kernel stack (`MONOVIRT-L1-HANG…` lines, l1-init.sh's
/// `hang_report`), then the last lines the scenario printed before.
pub fn hang_report(run: &ScenarioRun) -> String {
    let threads: Vec<&str> = run
        .text
        .iter()
        .filter(|l| l.contains("MONOVIRT-L1-HANG"))
        .map(|l| l.trim_end())
        .collect();
    let output: Vec<&str> = run
        .text
        .iter()
        .filter(|l| !l.contains("MONOVIRT-L1-HANG"))
        .map(|l| l.trim_end())
        .collect();
    let tail = &output[output.len().saturating_sub(HANG_TAIL_LINES)..];
    format!(
        "its threads then:\n{}\nits last lines:\n{}",
        if threads.is_empty() {
            "(no report)".to_string()
        } else {
            threads.join("\n")
        },
        tail.join("\n")
    )
}

/// Checks what every L1 boot must show whatever its architecture: its init started and
/// finished, loaded every module, has a `/dev/kvm` from `kvm_module`, the monovirt
/// binary runs there, and QEMU ended with L1's poweroff. The tier checks the markers'
/// architecture-specific fields itself.
pub fn check_l1(run: &QemuRun, markers: &[Marker], kvm_module: &str, failures: &mut Vec<String>) {
    if find(markers, "MONOVIRT-L1-INIT-OK").is_none() {
        failures.push("L1's init did not start (no MONOVIRT-L1-INIT-OK)".into());
    }
    for m in markers
        .iter()
        .filter(|m| m.name == "MONOVIRT-L1-INSMOD-FAILED")
    {
        failures.push(format!("L1 could not load module {:?}", m.field("module")));
    }
    if find(markers, "MONOVIRT-L1-KVM-OK").is_none() {
        failures.push(format!(
            "L1 has no {kvm_module} /dev/kvm (no MONOVIRT-L1-KVM-OK)"
        ));
    }
    if find(markers, "MONOVIRT-L1-MONOVIRT-OK").is_none() {
        failures.push("monovirt does not run in L1 (no MONOVIRT-L1-MONOVIRT-OK)".into());
    }
    if find(markers, "MONOVIRT-L1-DONE").is_none() {
        failures.push("L1's init did not finish (no MONOVIRT-L1-DONE)".into());
    }
    match run.status {
        None => failures.push(format!(
            "L1 did not power off within {} s",
            run.timeout.as_secs()
        )),
        Some(status) if !status.success() => failures.push(format!("QEMU exited with {status}")),
        Some(_) => {}
    }
}

/// Fails `test` with every failure and the end of the serial log, if there are any.
pub fn fail_if_any(test: &str, run: &QemuRun, failures: &[String]) {
    if failures.is_empty() {
        return;
    }
    let mut msg = format!("{test}: {} check(s) failed:\n", failures.len());
    for failure in failures {
        let _ = writeln!(msg, "  - {failure}");
    }
    panic!("{msg}{}", run.tail());
}
