//! The nested ppc64le KVM tier: `monovirt run`, cross-built for powerpc64le, boots the
//! ppc64le test guest (`tests/ppc64le-guest`) and the unmodified Debian ppc64el kernel on
//! a real KVM-HV, inside an emulator.
//!
//! There is no POWER host here. QEMU's pseries machine in TCG mode with a POWER9 CPU and
//! `cap-nested-hv=on` boots the Debian ppc64el kernel as L1; L1's init
//! (`tests/linux/l1-init.sh`, shared with the x86 tier) loads that kernel's own `kvm` and
//! `kvm_hv` modules, which gives a KVM-HV `/dev/kvm` running its guests through the
//! nested-HV interface, and then runs the scenarios this test writes into
//! `/etc/scenarios.sh`, each one a `monovirt run` of an L2 guest. L1 is booted once for
//! all of them (it is emulated).
//!
//! The kernel, busybox and both initramfs bases come from
//! `scripts/fetch-guest-artifacts.sh ppc64el` (cached under
//! `target/guest-artifacts/ppc64el`); this test cross-builds monovirt and the test guest
//! (cargo, cached) and adds them, monovirt's shared libraries from the cross C library and
//! the L2 images to L1's initramfs as a second cpio archive. The serial console goes to
//! `target/tmp/ppc64le-tier/`. Functional proof, never a timing source.
//!
//! What the test guest must report is written here from the specifications (PAPR/LoPAR,
//! the Power ISA's MSR bits, the devicetree specification) and from what the scenario
//! configured, never taken from a previous run.
//!
//! Without QEMU, the cross tools or the artifacts the test prints why and skips; with
//! `MONOVIRT_REQUIRE_KVM=1` it fails instead.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};

mod l1_support;
use l1_support::{
    check_l1, copy_into, fail_if_any, fetch_guest_artifacts, find, hang_report, pack_l1_initrd,
    prepare_or_skip, repo, run_qemu, scenario_run, work_dir, Marker, QemuRun, ScenarioRun,
};

/// The tier's name in logs and its work folder under target/tmp.
const TIER: &str = "ppc64le-tier";
/// The cross target of monovirt and of the test guest.
const TARGET: &str = "powerpc64le-unknown-linux-gnu";
/// The cross C library (package libc6-dev-ppc64el-cross): monovirt's shared libraries.
const SYSROOT: &str = "/usr/powerpc64le-linux-gnu";
/// L1's boot (SLOF, prom_init, the kernel, the modules) took 27 s on this loaded host.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// L1's init kills one `monovirt run` after this many seconds.
const SCENARIO_TIMEOUT_SECS: u64 = 240;
/// The exit code of a `monovirt run` that L1's init killed (128 + SIGKILL).
const SCENARIO_TIMED_OUT_RC: i32 = 137;
/// How far below its configured memory an L2 Linux's MemTotal may be (its image, page
/// structs and early allocations; 64 KiB pages make ppc64le's larger than x86's).
const MEMTOTAL_SLACK_MIB: u64 = 96;
/// What L1 is given (`-m`).
const L1_MEMORY_MIB: u64 = 2048;

/// Where L1's initramfs holds the L2 images.
const L2_GUEST: &str = "/l2/test-guest";
const L2_GUEST_INITRD: &str = "/l2/test-guest-initrd";
const L2_VMLINUX: &str = "/l2/vmlinux";
const L2_INITRD: &str = "/l2/initrd.cpio.gz";

/// The PCI host bridge `devices::pci` puts in slot 0 (vendor:device), as the guest reads
/// it through RTAS `ibm,read-pci-config`.
const HOST_BRIDGE_ID: &str = "8086:0d57";

/// The workspace's target folder (the parent of `CARGO_TARGET_TMPDIR`).
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is target/tmp")
        .to_path_buf()
}

/// Whether an inherited variable must not reach the cross build's cargo: the host build's
/// flags (they must not leak into a cross or freestanding build), and what cargo sets for
/// this test binary (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, `CARGO_TARGET_TMPDIR`, ...).
/// Build scripts watch some of the latter (ring's reruns on `CARGO_PKG_NAME` and
/// `CARGO_MANIFEST_DIR`), so with them the build scripts/test.sh already made is stale and
/// the whole cross build (ring's C code, rustls, monovirt) is redone: about 3 minutes.
fn leaks_into_cargo(key: &str) -> bool {
    const KEEP: [&str; 4] = [
        "CARGO_HOME",
        "CARGO_TERM_",
        "CARGO_NET_",
        "CARGO_REGISTRIES_",
    ];
    key == "RUSTFLAGS"
        || key == "OUT_DIR"
        || key.starts_with("__CARGO")
        || (key.starts_with("CARGO") && key != "CARGO" && !KEEP.iter().any(|k| key.starts_with(k)))
}

/// Runs cargo with `args` in the environment scripts/test.sh runs it in, so an up-to-date
/// build is reused as it is.
fn cargo(args: &[&str], target_dir: &Path) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(leaks_into_cargo) {
            command.env_remove(&key);
        }
    }
    let status = command
        .args(args)
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(repo())
        .stdin(Stdio::null())
        .status()
        .context("cannot run cargo")?;
    ensure!(
        status.success(),
        "cargo {} failed ({status})",
        args.join(" ")
    );
    Ok(())
}

/// The prepared artifacts of the tier.
struct Tier {
    vmlinux: PathBuf,
    l2_initrd: PathBuf,
    l1_base: PathBuf,
    monovirt: PathBuf,
    guest: PathBuf,
}

impl Tier {
    fn prepare() -> Result<Self> {
        let dir = fetch_guest_artifacts("qemu-system-ppc64", "qemu-system-ppc", &["ppc64el"])?;
        let dir = dir.join("ppc64el");

        // monovirt for ppc64le (a debug build: what scripts/test.sh cross-builds anyway),
        // and the test guest in its own workspace.
        let target = target_dir();
        cargo(
            &["build", "--locked", "--target", TARGET, "--bin", "monovirt"],
            &target,
        )
        .context("cross-building monovirt (rustup target add powerpc64le-unknown-linux-gnu; package gcc-powerpc64le-linux-gnu)")?;
        let guest_manifest = repo().join("tests/ppc64le-guest/Cargo.toml");
        let guest_target = repo().join("tests/ppc64le-guest/target");
        cargo(
            &[
                "build",
                "--release",
                "--locked",
                "--target",
                TARGET,
                "--manifest-path",
                guest_manifest
                    .to_str()
                    .context("non-UTF-8 repository path")?,
            ],
            &guest_target,
        )
        .context("building the ppc64le test guest")?;

        let tier = Tier {
            vmlinux: dir.join("vmlinux"),
            l2_initrd: dir.join("l2-initrd.cpio.gz"),
            l1_base: dir.join("l1-base.cpio"),
            monovirt: target.join(TARGET).join("debug/monovirt"),
            guest: guest_target
                .join(TARGET)
                .join("release/monovirt-ppc64le-test-guest"),
        };
        for file in [
            &tier.vmlinux,
            &tier.l2_initrd,
            &tier.l1_base,
            &tier.monovirt,
            &tier.guest,
        ] {
            ensure!(file.is_file(), "{} is missing", file.display());
        }
        Ok(tier)
    }

    /// The tier, or `None` after printing why it cannot run (a panic under
    /// `MONOVIRT_REQUIRE_KVM=1`).
    fn or_skip(test: &str) -> Option<Self> {
        prepare_or_skip(test, "the nested ppc64le KVM tier", Self::prepare)
    }
}

/// What an L2 guest is and what it should show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// The test guest; it ends with RTAS `power-off` or `system-reboot` as its command
    /// line says.
    TestGuest { reboot: bool },
    /// The Debian kernel with tests/linux/l2-init.sh running `monovirt.task=poweroff`.
    Debian,
}

/// One `monovirt run` of an L2 guest inside L1.
struct Scenario {
    name: &'static str,
    kind: Kind,
    memory_mib: u64,
}

impl Scenario {
    fn cmdline(&self) -> String {
        match self.kind {
            Kind::TestGuest { reboot } => format!(
                "console=hvc0 {} scenario={}",
                if reboot { "reboot" } else { "poweroff" },
                self.name
            ),
            Kind::Debian => "console=hvc0 panic=-1 monovirt.task=poweroff".to_string(),
        }
    }

    fn shell_line(&self) -> String {
        let (kernel, initrd) = match self.kind {
            Kind::TestGuest { .. } => (L2_GUEST, L2_GUEST_INITRD),
            Kind::Debian => (L2_VMLINUX, L2_INITRD),
        };
        format!(
            "scenario {} --kernel {kernel} --initrd {initrd} --cmdline \"{}\" --cpus 1 --memory {}\n",
            self.name,
            self.cmdline(),
            self.memory_mib
        )
    }
}

/// `readelf` output of `args` on `file`.
fn readelf(args: &[&str], file: &Path) -> Result<String> {
    let out = Command::new("readelf")
        .args(args)
        .arg(file)
        .output()
        .context("cannot run readelf (package binutils)")?;
    ensure!(
        out.status.success(),
        "readelf {args:?} {} failed",
        file.display()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The text between the first `[` after `marker` and the following `]` on each line that
/// has `marker`: readelf's `Shared library: [libc.so.6]` and
/// `[Requesting program interpreter: /lib64/ld64.so.2]`.
fn bracketed(text: &str, marker: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let at = line.find(marker)?;
            let rest = &line[at + marker.len()..];
            Some(
                rest.trim_start_matches([' ', '['])
                    .split(']')
                    .next()?
                    .trim()
                    .to_string(),
            )
        })
        .collect()
}

/// The cross binary's program interpreter and every shared library it needs (transitively),
/// from the cross C library in [`SYSROOT`] (ldd cannot run a foreign binary).
fn shared_libraries(binary: &Path) -> Result<(PathBuf, Vec<PathBuf>)> {
    let interp = bracketed(
        &readelf(&["-l"], binary)?,
        "Requesting program interpreter:",
    );
    let interp = interp
        .first()
        .context("monovirt has no program interpreter")?;
    let interp_file = Path::new(interp)
        .file_name()
        .context("bad interpreter path")?;
    let lib_dir = Path::new(SYSROOT).join("lib");
    let mut seen = BTreeSet::new();
    let mut queue = vec![binary.to_path_buf()];
    let mut libs = Vec::new();
    while let Some(file) = queue.pop() {
        for name in bracketed(&readelf(&["-d"], &file)?, "Shared library:") {
            if !seen.insert(name.clone()) {
                continue;
            }
            let path = lib_dir.join(&name);
            ensure!(
                path.is_file(),
                "{name} (needed by {}) is not in {} (package libc6-dev-ppc64el-cross)",
                file.display(),
                lib_dir.display()
            );
            queue.push(path.clone());
            libs.push(path);
        }
    }
    Ok((lib_dir.join(interp_file), libs))
}

/// A deterministic test pattern for the test guest's initrd (its CRC is checked).
fn guest_initrd() -> Vec<u8> {
    (0u32..40_000)
        .flat_map(|i| (i.wrapping_mul(2_654_435_761) ^ 0x5a5a_1234).to_le_bytes())
        .collect()
}

/// Builds L1's initramfs into `work`: the fetch script's base archive (busybox, the kvm
/// modules, l1-init.sh as /init) followed by a second archive with monovirt, its
/// shared libraries and loader, the L2 images and the scenarios.
fn build_l1_initrd(tier: &Tier, work: &Path, scenarios: &[Scenario]) -> Result<PathBuf> {
    let stage = work.join("l1-overlay");
    fs::create_dir_all(&stage)?;
    copy_into(&stage, &tier.monovirt, "/usr/bin/monovirt")?;
    // The debug build's symbols are most of its size; L1 unpacks every byte under TCG.
    let strip = Command::new("powerpc64le-linux-gnu-strip")
        .arg("--strip-debug")
        .arg(stage.join("usr/bin/monovirt"))
        .status()
        .context(
            "cannot run powerpc64le-linux-gnu-strip (package binutils-powerpc64le-linux-gnu)",
        )?;
    ensure!(strip.success(), "strip of the monovirt binary failed");
    let (interp, libs) = shared_libraries(&tier.monovirt)?;
    let interp_in_l1 = bracketed(
        &readelf(&["-l"], &tier.monovirt)?,
        "Requesting program interpreter:",
    )
    .into_iter()
    .next()
    .context("no interpreter")?;
    copy_into(&stage, &interp, &interp_in_l1)?;
    for lib in libs {
        let name = lib.file_name().context("library without a name")?;
        // Debian's ppc64el loader searches the multiarch folder (not /lib64).
        copy_into(
            &stage,
            &lib,
            &format!("/lib/powerpc64le-linux-gnu/{}", name.to_string_lossy()),
        )?;
    }

    copy_into(&stage, &tier.guest, L2_GUEST)?;
    fs::write(
        stage.join(L2_GUEST_INITRD.trim_start_matches('/')),
        guest_initrd(),
    )?;
    copy_into(&stage, &tier.vmlinux, L2_VMLINUX)?;
    copy_into(&stage, &tier.l2_initrd, L2_INITRD)?;
    let mut script = format!("SCENARIO_TIMEOUT={SCENARIO_TIMEOUT_SECS}\n");
    for scenario in scenarios {
        script.push_str(&scenario.shell_line());
    }
    pack_l1_initrd(work, &stage, Some(&script), &tier.l1_base)
}

/// Boots L1 (QEMU pseries, TCG, POWER9 with nested KVM-HV) with `initrd`, bounded by the
/// boot timeout plus `scenarios` scenario timeouts.
fn boot_l1(tier: &Tier, work: &Path, initrd: &Path, scenarios: usize) -> Result<QemuRun> {
    let timeout = BOOT_TIMEOUT + Duration::from_secs(SCENARIO_TIMEOUT_SECS) * scenarios as u32;
    let mut qemu = Command::new("qemu-system-ppc64");
    qemu.args([
        "-M",
        "pseries,cap-nested-hv=on",
        "-accel",
        "tcg",
        "-cpu",
        "POWER9",
    ])
    .args(["-smp", "1", "-m", &L1_MEMORY_MIB.to_string()])
    .args(["-nographic", "-net", "none", "-no-reboot"])
    .arg("-kernel")
    .arg(&tier.vmlinux)
    .arg("-initrd")
    .arg(initrd)
    .args(["-append", "console=hvc0 quiet panic=-1"]);
    run_qemu(TIER, qemu, work, "serial.log", timeout)
}

/// The test guest's `key=value` report lines (the first value of each key).
fn guest_report(text: &[&str]) -> BTreeMap<String, String> {
    let mut report = BTreeMap::new();
    for line in text {
        if let Some((k, v)) = line.trim().split_once('=') {
            if !k.is_empty() && !k.contains(' ') {
                report.entry(k.to_string()).or_insert_with(|| v.to_string());
            }
        }
    }
    report
}

/// Checks what the L1 boot must show: init ran on a ppc64le L1, kvm_hv gave a /dev/kvm,
/// monovirt runs.
fn check_ppc64le_l1(run: &QemuRun, failures: &mut Vec<String>) {
    let markers = run.markers();
    check_l1(run, &markers, "kvm_hv", failures);
    if let Some(m) = find(&markers, "MONOVIRT-L1-INIT-OK") {
        if m.field("machine") != Some("ppc64le") {
            failures.push(format!("L1 is {:?}, not ppc64le", m.field("machine")));
        }
    }
}

/// Days since the epoch of a `YYYY-MM-DD` date (Howard Hinnant's days-from-civil).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SS`.
fn parse_iso8601(text: &str) -> Option<i64> {
    let (date, time) = text.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let mut t = time.split(':').map(|p| p.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let (h, mi, s) = (t.next()??, t.next()??, t.next()??);
    Some(days_from_civil(y, mo, da) * 86_400 + h * 3600 + mi * 60 + s)
}

/// Checks the test guest's report against the scenario and the specifications.
fn check_test_guest(
    scenario: &Scenario,
    reboot: bool,
    run: &ScenarioRun,
    failures: &mut Vec<String>,
) {
    let name = scenario.name;
    let report = guest_report(&run.text);
    let mut expect = |key: &str, want: &str| {
        let got = report.get(key).map(String::as_str);
        if got != Some(want) {
            failures.push(format!("{name}: {key}={got:?}, expected {want:?}"));
        }
    };
    expect("guest", "monovirt-ppc64le-test-guest 0.1.0");
    // PAPR / head_64.S entry: r5 = 0 means no Open Firmware client interface.
    expect("entry.r5", "0x0");
    // The switch to little-endian succeeded, and interrupts follow it (H_SET_MODE).
    expect("hcall.set_mode_le", "0");
    expect("fdt", "ok");
    expect("fdt.device_type", "chrp");
    expect("console.compatible", "hvterm1");
    expect("cmdline", &scenario.cmdline());
    expect("mem.0", &format!("0x0,{:#x}", scenario.memory_mib << 20));
    expect("mem.total", &(scenario.memory_mib << 20).to_string());
    expect("cpus", "1");
    // CPU 0: reg 0, interrupt server 0.
    expect("cpu.0", "0,0");
    expect("hypervisor", "linux,kvm");
    // The XICS presentation controller serving interrupt servers 0..1.
    expect("xics", "IBM,ppc-xicp,0,1");
    expect("rtas.services", "6");
    expect("rtas.display", "ok");
    expect("pci.00:00.0", HOST_BRIDGE_ID);
    // LoPAR: a configuration read of a slot without a device fails with -1.
    expect("pci.empty_slot", "-1");
    // H_GET_TERM_CHAR with nothing typed: success, no bytes.
    expect("hvterm.get", "0,0");
    expect("timebase", "advancing");
    expect("action", if reboot { "reboot" } else { "poweroff" });
    expect("done", "1");
    for bad in ["panic", "exception", "end.error"] {
        if let Some(v) = report.get(bad) {
            failures.push(format!("{name}: the guest reported {bad}={v}"));
        }
    }
    // The MSR after the switch: SF (64-bit, bit 63), ME (bit 12) and LE (bit 0) set;
    // IR (bit 5), DR (bit 4) and EE (bit 15) clear: translation and interrupts off.
    match report
        .get("msr")
        .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
    {
        Some(msr)
            if msr & (1 << 63 | 1 << 12 | 1) == (1 << 63 | 1 << 12 | 1)
                && msr & (1 << 5 | 1 << 4 | 1 << 15) == 0 => {}
        other => failures.push(format!(
            "{name}: msr {other:#x?} is not SF|ME|LE without IR/DR/EE"
        )),
    }
    // The device tree lies in RAM, 8-byte aligned (devicetree specification 5.1).
    match report
        .get("entry.fdt")
        .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
    {
        Some(fdt) if fdt % 8 == 0 && fdt < scenario.memory_mib << 20 => {}
        other => failures.push(format!("{name}: device tree at {other:#x?}")),
    }
    // The initrd arrived intact.
    let want_crc = format!("{:#010x}", crc32fast::hash(&guest_initrd()));
    expect_crc(name, &report, &want_crc, failures);
    // RTAS get-time-of-day is the host's UTC clock (L1's, which QEMU sets from the host's):
    // within a day of now, so a wrong field order or byte order shows.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    match report.get("rtas.time").and_then(|t| parse_iso8601(t)) {
        Some(t) if (t - now).abs() < 86_400 => {}
        _ => failures.push(format!(
            "{name}: rtas.time={:?} is not within a day of the host's clock",
            report.get("rtas.time")
        )),
    }
    match (reboot, run.rc) {
        (_, None) => failures.push(format!("{name}: did not finish (L1 stopped first)")),
        (_, Some(SCENARIO_TIMED_OUT_RC)) => failures.push(format!(
            "{name}: monovirt run did not exit within {SCENARIO_TIMEOUT_SECS} s; {}",
            hang_report(run)
        )),
        (false, Some(0)) => {}
        (false, Some(rc)) => failures.push(format!(
            "{name}: monovirt run exited {rc} after RTAS power-off, expected 0"
        )),
        (true, Some(rc)) => {
            // monovirt names the reason on its own line; the guest's own lines never
            // mention a reboot except `action=reboot`.
            let reported = run.text.iter().any(|line| {
                !line.starts_with("action=") && line.to_ascii_lowercase().contains("reboot")
            });
            if rc == 0 || !reported {
                failures.push(format!(
                    "{name}: monovirt run exited {rc} and {} the reason Reboot; expected a \
                     non-zero exit that names it",
                    if reported { "printed" } else { "did not print" }
                ));
            }
        }
    }
}

fn expect_crc(
    name: &str,
    report: &BTreeMap<String, String>,
    want: &str,
    failures: &mut Vec<String>,
) {
    if report.get("initrd.crc32").map(String::as_str) != Some(want) {
        failures.push(format!(
            "{name}: initrd.crc32={:?} (initrd={:?}), expected {want}",
            report.get("initrd.crc32"),
            report.get("initrd")
        ));
    }
}

/// Checks the Debian kernel's run: its init reached with the task, one CPU online, its
/// memory, a working timer, and the poweroff ending `monovirt run` with 0.
fn check_debian(scenario: &Scenario, run: &ScenarioRun, failures: &mut Vec<String>) {
    let name = scenario.name;
    let markers: Vec<Marker> = run.text.iter().filter_map(|l| Marker::parse(l)).collect();
    match find(&markers, "MONOVIRT-L2-INIT-OK") {
        None => failures.push(format!("{name}: the Debian kernel never reached its init")),
        Some(m) if m.field("task") != Some("poweroff") => {
            failures.push(format!("{name}: L2 init got task {:?}", m.field("task")))
        }
        Some(_) => {}
    }
    match find(&markers, "MONOVIRT-L2-RESULT") {
        None => failures.push(format!("{name}: no MONOVIRT-L2-RESULT line")),
        Some(m) => {
            if m.field("cpus") != Some("1") || m.field("online") != Some("0") {
                failures.push(format!(
                    "{name}: L2 sees cpus={:?} online={:?}, expected 1 (0)",
                    m.field("cpus"),
                    m.field("online")
                ));
            }
            let configured_kb = scenario.memory_mib * 1024;
            let lowest_kb = configured_kb.saturating_sub(MEMTOTAL_SLACK_MIB * 1024);
            match m.field("memtotal_kb").and_then(|v| v.parse::<u64>().ok()) {
                Some(kb) if (lowest_kb..=configured_kb).contains(&kb) => {}
                other => failures.push(format!(
                    "{name}: L2 MemTotal {other:?} kB, expected {lowest_kb}..={configured_kb}"
                )),
            }
        }
    }
    if find(&markers, "MONOVIRT-L2-TIMER-OK").is_none() {
        failures.push(format!("{name}: L2 never woke from a 0.1 s sleep"));
    }
    if find(&markers, "MONOVIRT-L2-POWEROFF").is_none() {
        failures.push(format!("{name}: L2 never reached MONOVIRT-L2-POWEROFF"));
    }
    match run.rc {
        None => failures.push(format!("{name}: did not finish (L1 stopped first)")),
        Some(0) => {}
        Some(rc) => failures.push(format!(
            "{name}: monovirt run exited {rc} after the guest powered off, expected 0"
        )),
    }
}

/// On a nested KVM-HV, `monovirt run` boots the ppc64le test guest (which checks the
/// device tree, hcalls and RTAS and powers off or reboots through RTAS) and the Debian
/// ppc64el kernel to its init marker.
#[test]
fn ppc64le_guests_boot_under_monovirt_on_nested_kvm_hv() -> Result<()> {
    const TEST: &str = "ppc64le_guests_boot_under_monovirt_on_nested_kvm_hv";
    let scenarios = [
        Scenario {
            name: "guest-poweroff",
            kind: Kind::TestGuest { reboot: false },
            memory_mib: 256,
        },
        Scenario {
            name: "guest-reboot",
            kind: Kind::TestGuest { reboot: true },
            memory_mib: 128,
        },
        Scenario {
            name: "debian-poweroff",
            kind: Kind::Debian,
            memory_mib: 512,
        },
    ];
    let Some(tier) = Tier::or_skip(TEST) else {
        return Ok(());
    };
    let work = work_dir(TIER, TEST)?;
    let initrd = build_l1_initrd(&tier, &work, &scenarios)?;
    let run = boot_l1(&tier, &work, &initrd, scenarios.len())?;
    let mut failures = Vec::new();
    check_ppc64le_l1(&run, &mut failures);
    for scenario in &scenarios {
        let Some(srun) = scenario_run(&run.serial, scenario.name) else {
            failures.push(format!("{}: L1 never started it", scenario.name));
            continue;
        };
        println!("ppc64le tier: scenario {}: rc {:?}", scenario.name, srun.rc);
        match scenario.kind {
            Kind::TestGuest { reboot } => check_test_guest(scenario, reboot, &srun, &mut failures),
            Kind::Debian => check_debian(scenario, &srun, &mut failures),
        }
    }
    fail_if_any(TEST, &run, &failures);
    Ok(())
}

/// The helpers that read readelf's output and the guest's clock, on fixed input.
#[test]
fn parsing_helpers() -> Result<()> {
    let dynamic = " 0x0000000000000001 (NEEDED)             Shared library: [libgcc_s.so.1]\n \
                   0x0000000000000001 (NEEDED)             Shared library: [libc.so.6]\n";
    assert_eq!(
        bracketed(dynamic, "Shared library:"),
        vec!["libgcc_s.so.1", "libc.so.6"]
    );
    let headers = "      [Requesting program interpreter: /lib64/ld64.so.2]\n";
    assert_eq!(
        bracketed(headers, "Requesting program interpreter:"),
        vec!["/lib64/ld64.so.2"]
    );
    // 2000-03-01 is day 11017 after the epoch; 2026-11-26T04:05:09 is 1795665909 s.
    assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    assert_eq!(parse_iso8601("2026-11-26T04:05:09"), Some(1_795_665_909));
    assert_eq!(parse_iso8601("2026-11-26"), None);
    let report = guest_report(&["guest=x 1", "not a report line", "a=1", "a=2"]);
    assert_eq!(report.get("a").map(String::as_str), Some("1"));
    assert_eq!(report.get("guest").map(String::as_str), Some("x 1"));
    // The cross build must see the environment scripts/test.sh builds in.
    for key in [
        "CARGO_PKG_NAME",
        "CARGO_MANIFEST_DIR",
        "CARGO_TARGET_TMPDIR",
        "RUSTFLAGS",
    ] {
        ensure!(leaks_into_cargo(key), "{key} reaches the cross build");
    }
    for key in [
        "CARGO",
        "CARGO_HOME",
        "CARGO_TERM_COLOR",
        "PATH",
        "RUSTC_WRAPPER",
    ] {
        ensure!(
            !leaks_into_cargo(key),
            "{key} is withheld from the cross build"
        );
    }
    if scenario_run(
        "MONOVIRT-L1-SCENARIO-BEGIN name=a\nx=1\nMONOVIRT-L1-SCENARIO-END name=a rc=3\n",
        "a",
    )
    .is_none_or(|r| r.rc != Some(3) || r.text != ["x=1"])
    {
        bail!("scenario slicing failed");
    }
    Ok(())
}
