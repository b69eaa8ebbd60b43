//! The VMM against tiny hand-made guests (a few bytes of code): boot protocols, console,
//! poweroff/reset/triple fault exit reasons, pause/resume, stop via the power button,
//! many VMs in one process, clear errors for bad kernels. Runs on /dev/kvm (PVM here).

mod vmm_support;

use std::time::Duration;

use arch::boot::BootProtocol;
use monovirt::vmm::device_config::DiskConfig;
use monovirt::vmm::{self, ConsoleConfig, ConsoleRing, ExitReason, VmConfig, VmHandle};
use vmm_support::*;

const WAIT: Duration = Duration::from_secs(30);

fn config(name: &str, kernel: &TempFile, ring: &ConsoleRing) -> VmConfig {
    VmConfig {
        memory_mib: 64,
        console: ConsoleConfig::Ring(ring.clone()),
        ..VmConfig::new(name, &kernel.0)
    }
}

fn boot(cfg: VmConfig) -> VmHandle {
    let h = vmm::create(cfg).expect("VM created");
    h.start().expect("VM started");
    h
}

#[test]
fn hello_then_poweroff_through_both_protocols() {
    if !kvm_available() {
        return;
    }
    let code = [print(b"hello\n"), POWEROFF.to_vec()].concat();
    for (protocol, pvh_note) in [
        (BootProtocol::Auto, true),
        (BootProtocol::Pvh, true),
        (BootProtocol::Linux64, true),
        (BootProtocol::Auto, false),
    ] {
        let kernel = TempFile::new("hello", &elf(&code, pvh_note));
        let ring = ConsoleRing::new(4096);
        for vcpus in [1, 2, 4] {
            let h = boot(VmConfig {
                boot: protocol,
                vcpus,
                ..config("hello", &kernel, &ring)
            });
            assert_eq!(
                h.wait_timeout(WAIT),
                Some(ExitReason::Shutdown),
                "{protocol:?}"
            );
        }
        assert_eq!(ring.text(), "hello\n".repeat(3), "{protocol:?}");
    }
}

#[test]
fn reset_paths_report_reboot() {
    if !kvm_available() {
        return;
    }
    for code in [I8042_RESET, ACPI_RESET] {
        let kernel = TempFile::new("reset", &elf(code, true));
        let h = boot(config("reset", &kernel, &ConsoleRing::new(16)));
        assert_eq!(h.wait_timeout(WAIT), Some(ExitReason::Reboot));
    }
}

/// A restart on Reboot (what the node agent does for `runStrategy: Always`) reopens the
/// disks the moment the exit is published: by then the old VM has closed them, so the
/// image lock (one writer per image) is free.
#[test]
fn a_rebooting_vm_frees_its_disks_before_its_exit_is_published() {
    if !kvm_available() {
        return;
    }
    let kernel = TempFile::new("reboot-disk", &elf(I8042_RESET, true));
    let image = TempFile::new("reboot-disk-image", &[0u8; 1 << 20]);
    for round in 0..10 {
        let h = vmm::create(VmConfig {
            disks: vec![DiskConfig {
                path: image.0.clone(),
                read_only: false,
                serial: None,
                cache: None,
            }],
            ..config("reboot-disk", &kernel, &ConsoleRing::new(16))
        })
        .unwrap_or_else(|e| panic!("round {round}: the disk is still locked: {e:?}"));
        h.start().expect("VM started");
        assert_eq!(
            h.wait_timeout(WAIT),
            Some(ExitReason::Reboot),
            "round {round}"
        );
    }
}

#[test]
fn triple_fault_is_a_crash_and_spares_the_others() {
    if !kvm_available() {
        return;
    }
    let good = TempFile::new("dots", &elf(DOTS, true));
    let bad = TempFile::new("ud2", &elf(TRIPLE_FAULT, true));
    let rings: Vec<ConsoleRing> = (0..8).map(|_| ConsoleRing::new(1024)).collect();
    let handles: Vec<VmHandle> = rings
        .iter()
        .enumerate()
        .map(|(i, ring)| {
            let kernel = if i == 3 { &bad } else { &good };
            boot(VmConfig {
                vcpus: 2,
                ..config(&format!("vm{i}"), kernel, ring)
            })
        })
        .collect();
    match handles[3].wait_timeout(WAIT) {
        Some(ExitReason::Crash { detail }) => assert!(detail.contains("triple fault"), "{detail}"),
        other => panic!("expected a crash, got {other:?}"),
    }
    for (i, (h, ring)) in handles.iter().zip(&rings).enumerate() {
        if i == 3 {
            continue;
        }
        // Still running, and still making progress after the crash.
        let before = ring.total();
        assert!(
            ring.wait_for("...", WAIT),
            "vm{i} printed nothing: {:?}",
            ring.text()
        );
        let deadline = std::time::Instant::now() + WAIT;
        while ring.total() <= before + 3 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(ring.total() > before + 3, "vm{i} stalled");
        assert_eq!(h.wait_timeout(Duration::ZERO), None, "vm{i} ended");
    }
    for h in &handles {
        let _ = h.kill();
        assert!(h.wait_timeout(WAIT).is_some());
    }
    assert_eq!(handles[0].wait(), ExitReason::Killed);
}

#[test]
fn pause_stops_progress_and_resume_continues() {
    if !kvm_available() {
        return;
    }
    let kernel = TempFile::new("dots", &elf(DOTS, true));
    let ring = ConsoleRing::new(1 << 16);
    let h = boot(VmConfig {
        vcpus: 2,
        ..config("pause", &kernel, &ring)
    });
    assert!(ring.wait_for(".", WAIT));
    h.pause().expect("paused");
    let frozen = ring.total();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(ring.total(), frozen, "output while paused");
    assert!(h.pause().is_err(), "pausing twice is an invalid transition");
    h.resume().expect("resumed");
    let deadline = std::time::Instant::now() + WAIT;
    while ring.total() == frozen && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(ring.total() > frozen, "no progress after resume");
    h.kill().expect("killed");
    assert_eq!(h.wait_timeout(WAIT), Some(ExitReason::Killed));
    assert!(h.start().is_err(), "commands after the end fail");
}

#[test]
fn stop_presses_the_power_button_then_forces() {
    if !kvm_available() {
        return;
    }
    // A guest that handles the button powers off: Shutdown.
    let kernel = TempFile::new(
        "button",
        &elf(&[POWEROFF_ON_BUTTON, POWEROFF].concat(), true),
    );
    let h = boot(config("button", &kernel, &ConsoleRing::new(16)));
    std::thread::sleep(Duration::from_millis(20));
    h.stop(WAIT).expect("stop");
    assert_eq!(h.wait_timeout(WAIT), Some(ExitReason::Shutdown));

    // A guest that ignores it is stopped when the grace period ends: Killed.
    let kernel = TempFile::new("deaf", &elf(DOTS, true));
    let h = boot(config("deaf", &kernel, &ConsoleRing::new(16)));
    h.stop(Duration::from_millis(50)).expect("stop");
    assert_eq!(h.wait_timeout(WAIT), Some(ExitReason::Killed));
}

#[test]
fn bad_kernels_are_clear_errors() {
    if !kvm_available() {
        return;
    }
    let ring = ConsoleRing::new(16);
    let missing = VmConfig::new("missing", "/nonexistent/vmlinux");
    let err = vmm::create(missing).err().expect("missing kernel fails");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("Cannot open kernel /nonexistent/vmlinux"),
        "{msg}"
    );

    let garbage = TempFile::new("garbage", &[0x42u8; 4096]);
    let err = vmm::create(config("garbage", &garbage, &ring))
        .err()
        .expect("corrupt kernel fails");
    let chain = anyhow::Error::from(err);
    let msg = format!("{chain:#}");
    assert!(msg.contains("Cannot boot"), "{msg}");
    assert!(
        msg.contains("neither an ELF vmlinux nor a bzImage"),
        "{msg}"
    );

    let no_pvh = TempFile::new("nopvh", &elf(POWEROFF, false));
    let err = vmm::create(VmConfig {
        boot: BootProtocol::Pvh,
        ..config("nopvh", &no_pvh, &ring)
    })
    .err()
    .expect("PVH without note fails");
    assert!(format!("{:#}", anyhow::Error::from(err)).contains("no PVH entry note"));
}

#[test]
fn dropping_the_last_handle_kills_the_vm() {
    if !kvm_available() {
        return;
    }
    let kernel = TempFile::new("dots", &elf(DOTS, true));
    let ring = ConsoleRing::new(64);
    let h = boot(config("orphan", &kernel, &ring));
    assert!(ring.wait_for(".", WAIT));
    let clone = h.clone();
    drop(h);
    let before = ring.total();
    assert!(
        ring.wait_for_total(before + 3, WAIT),
        "a remaining clone keeps the VM running"
    );
    drop(clone);
    // Unreachable now: it must stop printing (the guest prints without end otherwise).
    let deadline = std::time::Instant::now() + WAIT;
    let mut last = ring.total();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = ring.total();
        if now == last {
            break;
        }
        last = now;
        assert!(
            std::time::Instant::now() < deadline,
            "orphaned VM still runs"
        );
    }
}
