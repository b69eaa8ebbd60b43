//! The fast tier: the freestanding test guest (`tests/guest`) on monovirt's VMM and
//! /dev/kvm. The guest parses our ACPI tables with the `acpi` crate, brings up every vCPU
//! through INIT/SIPI, checks timers and the RTC, and reports `key=value` facts on COM1;
//! these tests compare them with what was configured, through PVH and the 64-bit boot
//! protocol, for several vCPU counts and memory sizes, and check the exit reasons,
//! pause/resume, CPU feature policies and many VMs in one process.

mod common;
mod vmm_support;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context, Result};
use arch::boot::BootProtocol;
use arch::cpuid::{CpuModel, CpuTemplate, FeaturePolicy, Topology};
use common::guest::{guest_elf, Report};
use monovirt::vmm::{self, ConsoleConfig, ConsoleRing, ExitReason, VmConfig, VmHandle};
use vmm_support::{kvm_available, TempFile};

/// Generous: the guest's ring-0 code is emulated by PVM here. Never a timing assertion.
const WAIT: Duration = Duration::from_secs(120);

struct Guest {
    handle: VmHandle,
    ring: ConsoleRing,
}

impl Guest {
    fn boot(name: &str, cmdline: &str, tweak: impl FnOnce(&mut VmConfig)) -> Result<Guest> {
        let ring = ConsoleRing::new(1 << 20);
        let mut cfg = VmConfig {
            cmdline: format!("console=ttyS0 {cmdline}"),
            memory_mib: 128,
            console: ConsoleConfig::Ring(ring.clone()),
            ..VmConfig::new(name, guest_elf()?)
        };
        tweak(&mut cfg);
        let handle = vmm::create(cfg)?;
        handle.start()?;
        Ok(Guest { handle, ring })
    }

    fn finish(&self) -> Result<(ExitReason, Report)> {
        let reason = self
            .handle
            .wait_timeout(WAIT)
            .with_context(|| format!("guest still running:\n{}", self.ring.text()))?;
        Ok((reason, Report::parse(&self.ring.text())))
    }
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in bytes {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xedb8_8320 & (0u32.wrapping_sub(crc & 1)));
        }
    }
    !crc
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DDTHH:MM:SS` to Unix seconds.
fn parse_rtc(s: &str) -> Option<i64> {
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let days = days_from_civil(n(0..4)?, n(5..7)?, n(8..10)?);
    Some(days * 86_400 + n(11..13)? * 3600 + n(14..16)? * 60 + n(17..19)?)
}

/// Everything the guest reports about the platform must match what we configured.
fn check_platform(
    r: &Report,
    protocol: &str,
    vcpus: u32,
    topo: &Topology,
    memory_mib: u64,
    cmdline: &str,
) -> Result<()> {
    let mem = memory_mib << 20;
    ensure!(r.get("boot") == Some(protocol), "boot protocol");
    ensure!(r.get("cmdline") == Some(cmdline), "command line");
    let want: Vec<(u64, u64, u32)> = arch::e820::memory_map(mem)
        .iter()
        .map(|e| (e.addr, e.size, e.kind as u32))
        .collect();
    ensure!(r.e820()? == want, "e820 map");
    ensure!(
        r.number("mem.total")? == mem - (0x10_0000 - 0x9_fc00),
        "usable RAM"
    );
    ensure!(r.get("cpuid.hypervisor") == Some("KVMKVMKVM"), "KVM leaves");
    ensure!(r.number("cpuid.apic_id")? == 0, "boot CPU APIC ID");
    for (key, value) in [
        ("acpi.rsdp", "ok"),
        ("acpi.rsdp.revision", "2"),
        ("acpi.xsdt", "ok"),
        ("acpi.tables", "FACP,APIC,MCFG"),
        ("acpi.fadt", "ok"),
        ("acpi.fadt.hw_reduced", "0"),
        ("acpi.fadt.pm1a_cnt", "io:0x604/16"),
        ("acpi.fadt.reset", "io:0x608/8,0x1"),
        ("acpi.fadt.sci", "9"),
        ("acpi.dsdt", "ok"),
        ("acpi.madt", "ok"),
        ("acpi.madt.ioapic.0", "0,0xfec00000,0"),
        ("acpi.madt.iso.0", "0,2,0x0"),
        ("acpi.madt.iso.1", "9,9,0xd"),
        ("acpi.mcfg", "ok"),
        ("acpi.mcfg.0", "0xe0000000,0,0-255"),
        ("acpi.s5", "5,5"),
        ("acpi.sci_en", "1"),
        ("pit.ch0", "counting"),
        ("lapic.timer", "fired"),
        ("kvmclock", "advancing"),
        ("done", "1"),
    ] {
        ensure!(
            r.get(key) == Some(value),
            "{key}: {:?} != {value:?}",
            r.get(key)
        );
    }
    ensure!(
        r.number("acpi.madt.lapics")? == u64::from(vcpus),
        "MADT CPUs"
    );
    ensure!(
        r.number("smp.expected")? == u64::from(vcpus),
        "expected CPUs"
    );
    ensure!(r.number("smp.online")? == u64::from(vcpus), "CPUs online");
    for i in 0..vcpus {
        let id = u64::from(topo.apic_id(i));
        ensure!(
            r.get(&format!("acpi.madt.lapic.{i}")) == Some(format!("{id},{i},0x1").as_str()),
            "MADT LAPIC {i}"
        );
        // CPU numbering in the guest follows bring-up order; every APIC ID must be there.
        ensure!(
            r.with_prefix("smp.cpu.")
                .any(|(k, v)| k.ends_with(".cpuid_apic_id") && v.parse::<u64>().ok() == Some(id)),
            "APIC ID {id} online with a matching CPUID"
        );
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("host clock")?
        .as_secs() as i64;
    let rtc = r.get("rtc").and_then(parse_rtc).context("rtc value")?;
    // The RTC reports the host's wall clock; allow for the run itself.
    ensure!((now - rtc).abs() < 600, "RTC {rtc} vs host {now}");
    Ok(())
}

#[test]
fn guest_sees_the_configured_platform_through_both_protocols() -> Result<()> {
    if !kvm_available() {
        return Ok(());
    }
    let initrd_bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let initrd = TempFile::new("initrd", &initrd_bytes);
    let cases: &[(BootProtocol, &str, u32, u64, bool)] = &[
        (BootProtocol::Pvh, "pvh", 1, 64, true),
        (BootProtocol::Pvh, "pvh", 2, 256, false),
        (BootProtocol::Pvh, "pvh", 4, 1024, true),
        (BootProtocol::Linux64, "linux64", 1, 128, true),
        (BootProtocol::Linux64, "linux64", 2, 4096, false),
        (BootProtocol::Linux64, "linux64", 4, 512, false),
    ];
    let mut guests = Vec::new();
    for (i, (protocol, _, vcpus, mem, with_initrd)) in cases.iter().enumerate() {
        let initrd = with_initrd.then(|| initrd.0.clone());
        guests.push(Guest::boot(&format!("platform{i}"), "poweroff", |c| {
            c.boot = *protocol;
            c.vcpus = *vcpus;
            c.memory_mib = *mem;
            c.initrd = initrd;
        })?);
    }
    for (g, (_, name, vcpus, mem, with_initrd)) in guests.iter().zip(cases) {
        let (reason, r) = g.finish()?;
        let ctx = || format!("{name} {vcpus} vCPUs {mem} MiB:\n{}", g.ring.text());
        check_platform(
            &r,
            name,
            *vcpus,
            &Topology::flat(*vcpus),
            *mem,
            "console=ttyS0 poweroff",
        )
        .with_context(ctx)?;
        if *with_initrd {
            let (start, size) = r
                .require("initrd")?
                .split_once(',')
                .context("initrd=start,size")?;
            ensure!(
                common::guest::parse_number(size)? == initrd_bytes.len() as u64,
                "initrd size"
            );
            ensure!(
                common::guest::parse_number(start)? % 4096 == 0,
                "initrd aligned"
            );
            ensure!(
                r.get("initrd.crc32") == Some(format!("{:#010x}", crc32(&initrd_bytes)).as_str()),
                "initrd contents"
            );
        } else {
            ensure!(r.get("initrd") == Some("none"), "no initrd");
        }
        ensure!(reason == ExitReason::Shutdown, "{reason}\n{}", ctx());
    }
    Ok(())
}

#[test]
fn reset_reboots_and_triple_fault_crashes() -> Result<()> {
    if !kvm_available() {
        return Ok(());
    }
    let reset = Guest::boot("reset", "reset nosmp", |_| {})?;
    let fault = Guest::boot("fault", "triplefault nosmp", |_| {})?;
    let (reason, r) = reset.finish()?;
    ensure!(
        reason == ExitReason::Reboot,
        "{reason}\n{}",
        reset.ring.text()
    );
    ensure!(r.get("done") == Some("1"));
    let (reason, _) = fault.finish()?;
    // On hardware KVM this is KVM_EXIT_SHUTDOWN ("triple fault"); PVM's instruction
    // emulator gives up on the guest's `int3` with an internal error instead. Either way
    // the VM is reported as crashed.
    ensure!(
        matches!(&reason, ExitReason::Crash { .. }),
        "{reason}\n{}",
        fault.ring.text()
    );
    Ok(())
}

#[test]
fn cpu_topology_and_feature_policies_reach_the_guest() -> Result<()> {
    if !kvm_available() {
        return Ok(());
    }
    // Find a feature KVM offers and the guest sees, so disabling it is observable. (PVM
    // lets a guest see some host bits that KVM's supported list does not name; those are
    // outside any VMM's control there, so the victim comes from KVM's list.)
    let kvm = kvm_ioctls::Kvm::new()?;
    let mut supported = arch::regs::supported_cpuid(&kvm)?;
    let offered = |name: &str, entries: &mut Vec<arch::cpuid::CpuidEntry>| {
        let f = arch::cpuid::feature(name).expect("known feature");
        entries
            .iter()
            .find(|e| e.function == f.function && e.index == f.index)
            .is_some_and(|e| {
                let reg = match f.reg {
                    arch::cpuid::Reg::Eax => e.eax,
                    arch::cpuid::Reg::Ebx => e.ebx,
                    arch::cpuid::Reg::Ecx => e.ecx,
                    arch::cpuid::Reg::Edx => e.edx,
                };
                reg & (1 << f.bit) != 0
            })
    };
    let probe = Guest::boot("probe", "poweroff nosmp", |_| {})?;
    let (_, r) = probe.finish()?;
    let flags: Vec<String> = r
        .require("cpuid.flags")?
        .split(' ')
        .map(str::to_string)
        .collect();
    let victim = [
        "avx2",
        "aes",
        "sse4.2",
        "popcnt",
        "x2apic",
        "cx16",
        "tsc-deadline",
    ]
    .into_iter()
    .find(|f| flags.iter().any(|x| x == f) && offered(f, &mut supported))
    .context("KVM offers none of the probe features")?;

    let topo = Topology {
        sockets: 2,
        cores: 1,
        threads: 2,
    };
    let g = Guest::boot("policy", "poweroff", |c| {
        c.vcpus = 4;
        c.topology = Some(topo);
        c.cpu = CpuTemplate {
            model: CpuModel::HostPassthrough,
            features: vec![
                (victim.to_string(), FeaturePolicy::Disable),
                ("lm".to_string(), FeaturePolicy::Require),
            ],
        };
    })?;
    let (reason, r) = g.finish()?;
    let ctx = || g.ring.text();
    check_platform(&r, "pvh", 4, &topo, 128, "console=ttyS0 poweroff").with_context(ctx)?;
    ensure!(reason == ExitReason::Shutdown, "{reason}");
    ensure!(
        !r.require("cpuid.flags")?.split(' ').any(|f| f == victim),
        "{victim} still visible"
    );
    // Leaf 0xB: 2 threads per core (shift 1), 2 logical CPUs per package (shift 1).
    ensure!(
        r.require("cpuid.topology")?
            .starts_with("smt:2:1,core:2:1;"),
        "topology {:?}",
        r.get("cpuid.topology")
    );

    // A requirement the host cannot meet is refused before anything runs.
    let err = vmm::create(VmConfig {
        cpu: CpuTemplate {
            model: CpuModel::HostPassthrough,
            features: vec![(victim.to_string(), FeaturePolicy::Forbid)],
        },
        ..VmConfig::new("forbid", guest_elf()?)
    })
    .err()
    .context("forbidding a host feature must fail")?;
    ensure!(format!("{:#}", anyhow::Error::from(err)).contains("forbidden"));
    Ok(())
}

fn wait_tick(ring: &ConsoleRing, above: u64) -> Result<u64> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let t = Report::parse(&ring.text()).number("tick").unwrap_or(0);
        if t > above {
            return Ok(t);
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "no tick above {above}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn pause_then_resume_keeps_the_guest_ticking() -> Result<()> {
    if !kvm_available() {
        return Ok(());
    }
    let g = Guest::boot("ticker", "tick", |c| c.vcpus = 2)?;
    let before = wait_tick(&g.ring, 1)?;
    g.handle.pause()?;
    let paused_at = g.ring.total();
    std::thread::sleep(Duration::from_millis(400));
    ensure!(g.ring.total() == paused_at, "console output while paused");
    g.handle.resume()?;
    wait_tick(
        &g.ring,
        before.max(Report::parse(&g.ring.text()).number("tick")?),
    )?;
    let r = Report::parse(&g.ring.text());
    ensure!(r.get("kvmclock") == Some("advancing"));
    g.handle.kill()?;
    ensure!(g.handle.wait_timeout(WAIT) == Some(ExitReason::Killed));
    Ok(())
}

#[test]
fn eight_guests_in_one_process_and_a_crash_harms_none() -> Result<()> {
    if !kvm_available() {
        return Ok(());
    }
    let guests: Vec<Guest> = (0..8)
        .map(|i| {
            let action = if i == 5 { "triplefault" } else { "poweroff" };
            Guest::boot(&format!("many{i}"), action, |c| {
                c.vcpus = 1 + (i % 2);
                c.memory_mib = 64;
            })
        })
        .collect::<Result<_>>()?;
    for (i, g) in guests.iter().enumerate() {
        let (reason, r) = g.finish()?;
        if i == 5 {
            ensure!(matches!(reason, ExitReason::Crash { .. }), "vm5: {reason}");
        } else {
            ensure!(
                reason == ExitReason::Shutdown,
                "vm{i}: {reason}\n{}",
                g.ring.text()
            );
            ensure!(r.get("done") == Some("1"), "vm{i} incomplete");
            ensure!(r.number("smp.online")? == 1 + (i as u64 % 2), "vm{i} CPUs");
        }
    }
    Ok(())
}

#[test]
fn monovirt_run_boots_the_guest_and_exits_with_it() -> Result<()> {
    if !kvm_available() {
        return Ok(());
    }
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_monovirt"));
    let guest = guest_elf()?;
    let run = |cmdline: &str, kernel: &std::path::Path| {
        std::process::Command::new(&bin)
            .arg("run")
            .arg("--kernel")
            .arg(kernel)
            .args(["--cmdline", cmdline, "--cpus", "2", "--memory", "256"])
            .stdin(std::process::Stdio::null())
            .output()
    };
    let out = run("console=ttyS0 poweroff", &guest)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.code() == Some(0), "{:?}\n{stdout}", out.status);
    let r = Report::parse(&stdout);
    ensure!(
        r.get("done") == Some("1") && r.number("smp.online")? == 2,
        "{stdout}"
    );

    let out = run("console=ttyS0 reset nosmp", &guest)?;
    ensure!(
        out.status.code() == Some(3),
        "reboot exit code: {:?}",
        out.status
    );
    ensure!(String::from_utf8_lossy(&out.stderr).contains("reboot"));

    let out = run("console=ttyS0", std::path::Path::new("/nonexistent/kernel"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(1), "{:?}", out.status);
    ensure!(
        stderr.contains("Cannot open kernel /nonexistent/kernel"),
        "{stderr}"
    );

    let corrupt = TempFile::new("corrupt", b"\x7fELF\x02\x01\x01 truncated");
    let out = run("console=ttyS0", &corrupt.0)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(1), "{:?}", out.status);
    ensure!(stderr.contains("Cannot boot"), "{stderr}");
    Ok(())
}

/// Boots the hand-made guest `code` (which prints `ready` first) under `monovirt run`,
/// sends `signal` once it is ready, and returns the exit status and stderr.
fn run_and_signal(
    code: &[u8],
    extra: &[&str],
    signal: libc::c_int,
) -> Result<(std::process::ExitStatus, String)> {
    use std::io::{BufRead, BufReader, Read};
    let kernel = TempFile::new("signal", &vmm_support::elf(code, true));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_monovirt"))
        .arg("run")
        .arg("--kernel")
        .arg(&kernel.0)
        .args(["--memory", "64"])
        .args(extra)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
    let mut line = String::new();
    ensure!(
        stdout.read_line(&mut line)? > 0 && line == "ready\n",
        "guest printed {line:?}"
    );
    let pid = i32::try_from(child.id())?;
    // SAFETY: signalling our own child process.
    ensure!(unsafe { libc::kill(pid, signal) } == 0, "kill failed");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .context("stderr")?
        .read_to_string(&mut stderr)?;
    Ok((child.wait()?, stderr))
}

#[test]
fn monovirt_run_turns_sigterm_and_sigint_into_a_power_button_stop() -> Result<()> {
    use vmm_support::{print, POWEROFF, POWEROFF_ON_BUTTON};
    if !kvm_available() {
        return Ok(());
    }
    // A guest that powers off on the ACPI power button: a clean exit.
    let code = [
        print(b"ready\n"),
        POWEROFF_ON_BUTTON.to_vec(),
        POWEROFF.to_vec(),
    ]
    .concat();
    let (status, err) = run_and_signal(&code, &[], libc::SIGTERM)?;
    ensure!(status.code() == Some(0), "{status:?}\n{err}");
    ensure!(err.contains("SIGTERM: pressed the power button"), "{err}");
    // One that ignores it (interrupts off, halted) is stopped when the timeout runs out:
    // reason Killed.
    let code = [print(b"ready\n"), vec![0xfa, 0xf4, 0xeb, 0xfd]].concat();
    let (status, err) = run_and_signal(&code, &["--stop-timeout", "1"], libc::SIGINT)?;
    ensure!(status.code() == Some(5), "{status:?}\n{err}");
    ensure!(err.contains("SIGINT: pressed the power button"), "{err}");
    ensure!(err.contains("VM was killed"), "{err}");
    Ok(())
}
