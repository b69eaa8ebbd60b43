//! The test guest checked against an independent VMM: QEMU (TCG, q35) boots its ELF through
//! the PVH note, as `monovirt run` does, and the guest's report must describe QEMU's machine.
//! This proves the guest itself (entry, ACPI walk, SMP bring-up, timers, power paths) before
//! its reports are used to judge monovirt's VMM. QEMU's firmware tables differ from ours
//! (RSDT instead of XSDT, PM1 control at 0x604, reset through 0xcf9), which also shows the
//! guest follows the tables instead of assuming addresses.
//!
//! Without QEMU the tests print why and skip; with `MONOVIRT_REQUIRE_KVM=1` (the CI setting:
//! no tier may be skipped) they fail instead.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use std::io::Write as _;
use std::os::unix::net::UnixStream;

use anyhow::{bail, ensure, Context, Result};
use common::guest::{guest_elf, Report};

/// TCG on a shared 2-core machine: generous, never a timing assertion.
const TIMEOUT: Duration = Duration::from_secs(120);

fn require_tiers() -> bool {
    std::env::var("MONOVIRT_REQUIRE_KVM").is_ok_and(|v| v == "1")
}

/// Whether QEMU can run here; skips (or fails under `MONOVIRT_REQUIRE_KVM=1`) otherwise.
fn qemu_available() -> bool {
    let ok = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !require_tiers(),
            "qemu-system-x86_64 is missing (package qemu-system-x86) and MONOVIRT_REQUIRE_KVM=1"
        );
        eprintln!("skipping: qemu-system-x86_64 not found (install qemu-system-x86)");
    }
    ok
}

struct Run {
    output: String,
    /// `None` if the run was stopped by the test.
    status: Option<ExitStatus>,
    report: Report,
}

/// Boots the guest in QEMU and collects its serial output until QEMU exits or `stop`
/// returns true for the output so far (then QEMU is killed).
fn boot(
    cpus: u32,
    memory_mib: u32,
    cmdline: &str,
    initrd: Option<&Path>,
    extra: &[&str],
    stop: impl Fn(&Report) -> bool,
) -> Result<Run> {
    let elf = guest_elf()?;
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-accel",
        "tcg",
        "-M",
        "q35",
        "-nodefaults",
        "-display",
        "none",
        "-serial",
        "stdio",
    ])
    .args(["-smp", &cpus.to_string(), "-m", &memory_mib.to_string()])
    .arg("-kernel")
    .arg(&elf)
    .args(["-append", cmdline])
    .args(extra)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    if let Some(initrd) = initrd {
        cmd.arg("-initrd").arg(initrd);
    }
    let mut child = cmd.spawn().context("starting qemu-system-x86_64")?;
    let mut stdout = child.stdout.take().context("qemu stdout")?;
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + TIMEOUT;
    let mut bytes = Vec::new();
    let status = loop {
        let report = Report::parse(&String::from_utf8_lossy(&bytes));
        if stop(&report) {
            child.kill().context("stopping qemu")?;
            child.wait()?;
            break None;
        }
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            bail!(
                "qemu did not finish within {TIMEOUT:?}; output:\n{}",
                String::from_utf8_lossy(&bytes)
            );
        }
        if let Ok(chunk) = rx.recv_timeout(Duration::from_millis(50)) {
            bytes.extend_from_slice(&chunk);
        }
    };
    reader.join().ok();
    bytes.extend(rx.try_iter().flatten());
    let output = String::from_utf8_lossy(&bytes).into_owned();
    let report = Report::parse(&output);
    Ok(Run {
        output,
        status,
        report,
    })
}

impl Run {
    /// Fails with `what` and the guest output unless `ok`.
    fn ensure(&self, ok: bool, what: &str) -> Result<()> {
        ensure!(ok, "{what}\n{}", context(self));
        Ok(())
    }

    /// Fails with `what` and the guest output unless the report's `key` is `want`.
    fn ensure_value(&self, key: &str, want: &str, what: &str) -> Result<()> {
        self.ensure(self.report.get(key) == Some(want), what)
    }

    /// Fails with `what` and the guest output unless QEMU exited by itself, successfully:
    /// the guest powered off.
    fn ensure_powered_off(&self, what: &str) -> Result<()> {
        self.ensure(self.status.is_some_and(|s| s.success()), what)
    }
}

fn context(run: &Run) -> String {
    format!("guest output:\n{}", run.output)
}

fn check_platform(r: &Report, cpus: u32, memory_mib: u64) -> Result<()> {
    ensure!(
        r.get("panic").is_none(),
        "guest panicked: {:?}",
        r.get("panic")
    );
    ensure!(r.require("boot")? == "pvh", "boot");
    let e820 = r.e820()?;
    let ram: u64 = e820.iter().filter(|e| e.2 == 1).map(|e| e.1).sum();
    ensure!(
        r.number("mem.total")? == ram,
        "mem.total is not the sum of the RAM entries"
    );
    // QEMU keeps the top 128 KiB below the configured size and 1 KiB of the first 640 KiB.
    let configured = memory_mib << 20;
    ensure!(
        ram <= configured && ram > configured - (1 << 20),
        "RAM {ram:#x} vs {configured:#x}"
    );
    ensure!(r.require("cpuid.vendor")?.len() == 12, "vendor");
    ensure!(
        r.require("cpuid.flags")?.split(' ').any(|f| f == "lm"),
        "long mode flag missing"
    );
    for key in [
        "acpi.rsdp",
        "acpi.rsdt",
        "acpi.fadt",
        "acpi.dsdt",
        "acpi.madt",
        "acpi.mcfg",
    ] {
        ensure!(r.require(key)? == "ok", "{key}={:?}", r.get(key));
    }
    ensure!(
        r.require("acpi.tables")?.split(',').any(|t| t == "APIC"),
        "MADT not listed"
    );
    ensure!(
        r.require("acpi.mcfg.0")?.starts_with("0xb0000000,0,0-"),
        "q35 ECAM window"
    );
    ensure!(r.require("acpi.s5")? == "0,0", "q35's \\_S5 is {{0, 0}}");
    ensure!(
        r.number("acpi.madt.lapics")? == u64::from(cpus),
        "MADT CPUs"
    );
    ensure!(
        r.number("smp.online")? == u64::from(cpus),
        "not every CPU came online"
    );
    ensure!(r.number("smp.expected")? == u64::from(cpus), "smp.expected");
    let mut ids: Vec<u64> = (0..cpus)
        .map(|i| r.number(&format!("smp.cpu.{i}")))
        .collect::<Result<_>>()?;
    for i in 0..cpus {
        ensure!(
            r.number(&format!("smp.cpu.{i}.cpuid_apic_id"))? == ids[i as usize],
            "CPU {i}: CPUID and LAPIC disagree on the APIC ID"
        );
    }
    for i in 1..cpus {
        ensure!(
            r.get(&format!("smp.cpu.{i}.features")) == Some("same"),
            "CPU {i} sees other CPUID features"
        );
        ensure!(
            r.number(&format!("smp.cpu.{i}.x2apic_id"))? == ids[i as usize],
            "CPU {i}: leaf 0xB ID"
        );
    }
    ids.sort_unstable();
    ids.dedup();
    ensure!(ids.len() == cpus as usize, "APIC IDs are not distinct");
    ensure!(r.require("pit.ch0")? == "counting", "pit.ch0");
    ensure!(r.require("pit.ch2")? == "counting", "pit.ch2");
    ensure!(r.require("lapic.timer")? == "fired", "lapic.timer");
    ensure!(r.require("kvmclock")? == "absent", "TCG has no kvmclock");
    let rtc = r.require("rtc")?;
    let host_year = 1970
        + std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
            / 31_556_952;
    let year: u64 = rtc.get(..4).context("rtc")?.parse().context("rtc year")?;
    ensure!(
        year.abs_diff(host_year) <= 1,
        "RTC year {year}, host {host_year}"
    );
    ensure!(r.require("done")? == "1", "done");
    Ok(())
}

fn temp_initrd(dir: &Path, len: usize) -> Result<(PathBuf, u32)> {
    // A deterministic, non-repeating pattern (xorshift), so misplaced pages change the CRC.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let path = dir.join("initrd.bin");
    std::fs::write(&path, &bytes)?;
    Ok((path, crc32fast::hash(&bytes)))
}

#[test]
fn pvh_boot_reports_the_platform_and_powers_off() -> Result<()> {
    if !qemu_available() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let (initrd, crc) = temp_initrd(dir.path(), 300_001)?;
    let cmdline = "console=ttyS0 poweroff x=\"a b\"";
    let run = boot(2, 256, cmdline, Some(&initrd), &[], |_| false)?;
    let r = &run.report;
    check_platform(r, 2, 256).with_context(|| context(&run))?;
    ensure!(
        r.get("cmdline") == Some(cmdline),
        "cmdline {:?}\n{}",
        r.get("cmdline"),
        context(&run)
    );
    ensure!(r.get("action") == Some("poweroff"));
    let (start, size) = r
        .require("initrd")?
        .split_once(',')
        .context("initrd=start,size")?;
    run.ensure(common::guest::parse_number(size)? == 300_001, "initrd size")?;
    ensure!(
        common::guest::parse_number(start)? % 4096 == 0,
        "initrd is page-aligned"
    );
    run.ensure(
        r.get("initrd.crc32") == Some(format!("{crc:#010x}").as_str()),
        "initrd crc",
    )?;
    run.ensure_value("acpi.sci_en", "1", "ACPI mode")?;
    let status = run.status.context("qemu was stopped")?;
    ensure!(
        status.success(),
        "QEMU exited with {status} after ACPI poweroff\n{}",
        context(&run)
    );
    Ok(())
}

#[test]
fn four_cpus_in_128_mib_all_come_online() -> Result<()> {
    if !qemu_available() {
        return Ok(());
    }
    let run = boot(4, 128, "console=ttyS0", None, &[], |_| false)?;
    check_platform(&run.report, 4, 128).with_context(|| context(&run))?;
    ensure!(run.report.get("initrd") == Some("none"));
    run.ensure_powered_off("poweroff")?;
    Ok(())
}

#[test]
fn reset_restarts_the_guest() -> Result<()> {
    if !qemu_available() {
        return Ok(());
    }
    let run = boot(2, 128, "reset", None, &[], |r| r.count("guest") >= 2)?;
    run.ensure(run.report.count("guest") >= 2, "no second boot after reset")?;
    run.ensure(run.report.get("panic").is_none(), "panic")?;
    ensure!(
        run.report.get("acpi.fadt.reset") == Some("io:0xcf9/8,0xf"),
        "FADT reset register"
    );
    Ok(())
}

#[test]
fn triple_fault_resets_the_machine() -> Result<()> {
    if !qemu_available() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("qemu.log");
    let log_arg = log.to_str().context("utf-8 temp path")?;
    let run = boot(
        1,
        64,
        "triplefault",
        None,
        &["-d", "cpu_reset", "-D", log_arg],
        |r| r.count("guest") >= 2,
    )?;
    ensure!(run.report.count("done") >= 1, "{}", context(&run));
    let qemu_log = std::fs::read_to_string(&log)?;
    run.ensure(
        qemu_log.contains("Triple fault"),
        "QEMU saw no triple fault",
    )?;
    Ok(())
}

#[test]
fn hang_and_tick_keep_running() -> Result<()> {
    if !qemu_available() {
        return Ok(());
    }
    let run = boot(1, 64, "nosmp tick", None, &[], |r| {
        r.number("tick").is_ok_and(|n| n >= 3)
    })?;
    run.ensure(run.status.is_none(), "the guest exited in tick mode")?;
    ensure!(run.report.get("smp.enabled") == Some("0"));
    ensure!(run.report.get("smp.online") == Some("1"));

    // Still running half a second after `done=1`.
    let done_at = std::cell::Cell::new(None::<Instant>);
    let run = boot(1, 64, "hang", None, &[], |r| {
        if r.get("done").is_some() && done_at.get().is_none() {
            done_at.set(Some(Instant::now()));
        }
        done_at
            .get()
            .is_some_and(|t| t.elapsed() > Duration::from_millis(500))
    })?;
    run.ensure(run.status.is_none(), "the guest exited in hang mode")?;
    ensure!(run.report.get("action") == Some("hang"));
    Ok(())
}

#[test]
fn wait_powers_off_on_the_acpi_power_button() -> Result<()> {
    if !qemu_available() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("monitor.sock");
    let monitor = format!("unix:{},server=on,wait=off", socket.display());
    // Once the guest has armed its SCI, press the button through QEMU's monitor (once; the
    // connection stays open until QEMU exits, so the command is not dropped with it).
    let monitor_conn = std::cell::RefCell::new(None::<UnixStream>);
    let run = boot(2, 128, "wait", None, &["-monitor", &monitor], |r| {
        if monitor_conn.borrow().is_none() && r.get("acpi.sci_route").is_some() {
            if let Ok(mut conn) = UnixStream::connect(&socket) {
                if conn.write_all(b"system_powerdown\n").is_ok() {
                    *monitor_conn.borrow_mut() = Some(conn);
                }
            }
        }
        false
    })?;
    let r = &run.report;
    run.ensure(
        monitor_conn.borrow().is_some(),
        "could not reach QEMU's monitor",
    )?;
    // q35's DSDT also has GPE methods (hotplug), which the guest arms too.
    run.ensure(
        r.get("acpi.events")
            .is_some_and(|e| e.split(',').any(|event| event == "pwrbtn")),
        "q35 has the fixed power button",
    )?;
    run.ensure_value("acpi.sci_route", "gsi=9,flags=0xd,ok", "SCI route")?;
    run.ensure_value("acpi.event", "pwrbtn", "no power button event")?;
    run.ensure_powered_off("QEMU did not power off")?;
    Ok(())
}

#[test]
fn virtio_blk_through_virtio_drivers_writes_and_refuses_read_only() -> Result<()> {
    if !qemu_available() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let rw = dir.path().join("rw.img");
    let ro = dir.path().join("ro.img");
    std::fs::write(&rw, vec![0u8; 1 << 20])?;
    let mut ro_bytes = vec![0u8; 1 << 20];
    ro_bytes[..5].copy_from_slice(b"hello");
    std::fs::write(&ro, &ro_bytes)?;
    let drive = |path: &Path, id: &str, extra: &str| {
        format!("file={},if=none,id={id},format=raw{extra}", path.display())
    };
    let (rw_drive, ro_drive) = (drive(&rw, "d0", ""), drive(&ro, "d1", ",readonly=on"));
    let args = [
        "-drive",
        rw_drive.as_str(),
        "-device",
        "virtio-blk-pci,drive=d0,disable-legacy=on,serial=disk-zero",
        "-drive",
        ro_drive.as_str(),
        "-device",
        "virtio-blk-pci,drive=d1,disable-legacy=on,serial=ro-disk",
    ];
    let run = boot(1, 128, "blkwrite", None, &args, |_| false)?;
    let r = &run.report;
    ensure!(r.get("panic").is_none(), "panic\n{}", context(&run));
    run.ensure(
        r.get("virtio.blk.0")
            .is_some_and(|v| v.ends_with(",sectors=2048,ro=0")),
        "rw disk",
    )?;
    run.ensure_value("virtio.blk.0.serial", "disk-zero", "serial")?;
    run.ensure_value("virtio.blk.0.write", "ok", "write")?;
    run.ensure_value("virtio.blk.1.serial", "ro-disk", "serial")?;
    run.ensure(
        r.get("virtio.blk.1.crc32.0")
            == Some(format!("{:#010x}", crc32fast::hash(&ro_bytes[..4096])).as_str()),
        "read-only disk's first 4 KiB",
    )?;
    run.ensure_value("virtio.blk.1.write", "refused", "read-only write")?;
    run.ensure_powered_off("poweroff")?;
    // The pattern the guest documents, at bytes 4096..8192 of the image, and nothing else.
    let image = std::fs::read(&rw)?;
    for (offset, &byte) in image.iter().enumerate() {
        let expected = if (4096..8192).contains(&offset) {
            (offset % 251) as u8 ^ 0x5a
        } else {
            0
        };
        ensure!(
            byte == expected,
            "image byte {offset:#x} is {byte:#x}, expected {expected:#x}"
        );
    }
    ensure!(
        std::fs::read(&ro)? == ro_bytes,
        "the read-only image changed"
    );
    Ok(())
}

#[test]
fn virtio_net_with_smoltcp_gets_a_lease_and_moves_a_tcp_stream() -> Result<()> {
    if !qemu_available() {
        return Ok(());
    }
    // QEMU's user network on loopback only: the guest's port 7777 forwarded from 127.0.0.1.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let netdev = format!("user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:7777");
    let args = [
        "-netdev",
        netdev.as_str(),
        "-device",
        "virtio-net-pci,netdev=n0,disable-legacy=on",
    ];
    // A deterministic 256 KiB stream (TCG is slow; the size is not the point here).
    let payload: Vec<u8> = (0..256 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let expected = format!(
        "bytes={} crc32={:#010x}\n",
        payload.len(),
        crc32fast::hash(&payload)
    );
    let peer = std::cell::RefCell::new(None::<std::thread::JoinHandle<Result<String>>>);
    let run = boot(1, 128, "net", None, &args, |r| {
        if peer.borrow().is_none() && r.get("net.tcp.listen").is_some() {
            let payload = payload.clone();
            *peer.borrow_mut() = Some(std::thread::spawn(move || -> Result<String> {
                let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
                s.set_read_timeout(Some(TIMEOUT))?;
                s.write_all(&payload)?;
                s.shutdown(std::net::Shutdown::Write)?;
                let mut reply = String::new();
                s.read_to_string(&mut reply)?;
                Ok(reply)
            }));
        }
        false
    })?;
    let r = &run.report;
    run.ensure_value("net.ip", "10.0.2.15/24", "DHCP lease")?;
    // `restrict=on` keeps the guest off any outside network, so the lease names no router.
    run.ensure(
        r.get("virtio.net.0")
            .is_some_and(|v| v.ends_with("mac=52-54-00-12-34-56")),
        "MAC",
    )?;
    let reply = peer
        .into_inner()
        .context("the guest never listened")?
        .join()
        .map_err(|_| anyhow::anyhow!("peer panicked"))??;
    ensure!(
        reply == expected,
        "guest replied {reply:?}, expected {expected:?}\n{}",
        context(&run)
    );
    run.ensure(
        r.get("net.tcp.rx")
            == Some(
                expected
                    .trim_end()
                    .replace("bytes=", "")
                    .replace(" crc32=", ",")
                    .as_str(),
            ),
        "net.tcp.rx",
    )?;
    run.ensure_powered_off("poweroff")?;
    Ok(())
}

#[test]
fn virtio_rng_and_console_through_virtio_drivers() -> Result<()> {
    if !qemu_available() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let hvc = dir.path().join("hvc0.txt");
    let chardev = format!("file,id=c0,path={}", hvc.display());
    let args = [
        "-device",
        "virtio-rng-pci,disable-legacy=on",
        "-device",
        "virtio-serial-pci,disable-legacy=on",
        "-chardev",
        chardev.as_str(),
        "-device",
        "virtconsole,chardev=c0",
    ];
    let run = boot(1, 128, "console=ttyS0", None, &args, |_| false)?;
    let r = &run.report;
    run.ensure(
        r.get("virtio.rng.0").is_some_and(|v| v.ends_with(",ok")),
        "rng",
    )?;
    run.ensure(
        r.get("virtio.console.0")
            .is_some_and(|v| v.ends_with(",wrote 27")),
        "console",
    )?;
    run.ensure_powered_off("poweroff")?;
    ensure!(
        std::fs::read(&hvc)? == b"monovirt-test-guest on hvc\n",
        "hvc0 output"
    );
    Ok(())
}
