//! monovirt's test guest: a freestanding x86_64 program that boots the way Linux does and
//! reports, one `key=value` line per fact on COM1, what the VMM gave it. Bugs in the VMM have
//! to fool code we did not write: ACPI tables are parsed by the `acpi` crate, CPUID topology by
//! `raw-cpuid`, PCI and virtio devices by `virtio-drivers`, TCP/IP by `smoltcp`, registers
//! through the `x86_64` crate.
//!
//! # Entry
//! One ELF, two protocols (see [`boot`]): PVH through the `XEN_ELFNOTE_PHYS32_ENTRY` note
//! (32-bit, `%ebx` = `hvm_start_info`), or the ELF entry point as the 64-bit Linux boot
//! protocol (`%rsi` = `boot_params`). Linked and identity-mapped at 1 MiB.
//!
//! # Keys, in the order they are printed
//! Numbers with `0x` are hexadecimal, others decimal. Lines end with `\n`.
//!
//! | key | value |
//! | --- | --- |
//! | `guest` | `monovirt-test-guest <version>` |
//! | `boot` | `pvh` or `linux64` (which entry was used) |
//! | `boot.info_addr`, `boot.version` | address of `hvm_start_info`/`boot_params`; its version |
//! | `cmdline` | the command line (non-printable bytes as `\xNN`, `\` as `\\`) |
//! | `cmdline.truncated` | `1` if longer than the guest's 2 KiB buffer |
//! | `e820.count`, `e820.N` | entries; `start,size,type` (hex, hex, decimal) |
//! | `mem.total` | bytes of type-1 RAM in the map (decimal) |
//! | `initrd` | `start,size` (hex) or `none`; then `initrd.crc32` (IEEE, `0x%08x`, or `not in RAM`) |
//! | `action`, `smp.enabled` | what the command line asked for (see [`cmdline`]) |
//! | `cpuid.vendor`, `cpuid.max_leaf`, `cpuid.max_ext_leaf`, `cpuid.signature` | leaf 0 and 1 |
//! | `cpuid.hypervisor` | signature of leaf 0x40000000 (`KVMKVMKVM`) or `none`; `.max_leaf` |
//! | `cpuid.raw.1`, `cpuid.raw.7.0`, `cpuid.raw.80000001`, `cpuid.raw.40000001` | `eax,ebx,ecx,edx` |
//! | `cpuid.flags` | space-separated QEMU/libvirt names of the set bits of leaves 1, 7.0, 0x80000001 |
//! | `cpuid.apic_id` | initial APIC ID (leaf 1) of the boot CPU |
//! | `cpuid.topology` | leaf 0xB levels `type:logical_cpus:shift,...;x2apic_id=N` or `none` |
//! | `acpi.rsdp` | `ok` or why not; `.addr`, `.source` (`bootinfo`/`bios`), `.revision`, `.oem` |
//! | `acpi.xsdt` (`acpi.rsdt` for revision 0) | `ok` or why not |
//! | `acpi.tables` | signatures of the valid tables the root table lists, comma-separated |
//! | `acpi.fadt` | `ok`; `.revision`, `.hw_reduced`, `.pm1a_cnt`, `.sleep_control`, `.reset`, `.sci` |
//! | `acpi.dsdt` | `ok` (checksummed); `.addr`, `.len` |
//! | `acpi.madt` | `ok`/`malformed`; `.lapic.N=apic_id,uid,flags`, `.ioapic.N=id,addr,gsi_base`, `.iso.N=irq,gsi,flags`, `.lapic_addr`, `.lapics` (usable CPUs), `.ioapics` |
//! | `acpi.mcfg` | `ok` or `none`; `.N=base,segment,first-last bus` |
//! | `acpi.s5` | `SLP_TYPa,SLP_TYPb` of `\_S5` or `none` |
//! | `acpi.gpe_methods` | GPEs with an `_Exx`/`_Lxx` method |
//! | `acpi.sci_en` | `1` once the platform is in ACPI mode (not printed when hardware-reduced) |
//! | `pit.ch0` | `counting` or `stuck`; `pit.ch2` `counting` / `stuck` (+ `,out2-low`) |
//! | `lapic.mode`, `lapic.id`, `lapic.version` | the boot CPU's local APIC |
//! | `smp.trampoline` | page the AP start-up code was copied to |
//! | `smp.cpu.N` | APIC ID of CPU N (0 = boot CPU; printed by each AP itself); `.cpuid_apic_id` |
//! | `smp.cpu.N.x2apic_id`, `smp.cpu.N.features` | an AP's leaf 0xB ID; `same`/`differs` from the boot CPU's feature words |
//! | `smp.timeout.N` | an AP that did not come online (its APIC ID) |
//! | `smp.online`, `smp.expected` | CPUs running; CPUs the MADT lists |
//! | `lapic.timer` | `fired` or `silent` (one-shot on vector 0x40) |
//! | `kvmclock` | `advancing`, `stuck` or `absent`; `.stable`, `.boot_unix`, `.ns` |
//! | `rtc` | `YYYY-MM-DDTHH:MM:SS` or `invalid` |
//! | `pci.BB:DD.F`, `pci.count` | functions on the first ECAM bus: `vendor:device,class=CC.SS.PI` |
//! | `virtio.BB:DD.F` | virtio device type |
//! | `virtio.blk.N` | `BB:DD.F,sectors=S,ro=0/1`; `.serial`, `.crc32.0`, `.write` (see [`blk`]) |
//! | `virtio.rng.N` | `BB:DD.F,ok` (two 64-byte requests filled, non-zero, different) or what failed |
//! | `virtio.console.N` | `BB:DD.F,wrote 27` after writing [`console::LINE`] to the console |
//! | `virtio.net.0`, `net.nics`, `net.ip.source`, `net.ip`, `net.gateway`, `net.tcp.listen`, `net.tcp.rx`, `net.tcp`, `net.connect*`, `net.http.*` | with `net`: see [`net`] |
//! | `cidata`, `cidata.ethernet.N` | with `cidata`: see [`cidata`] |
//! | `done` | `1`: everything above was printed |
//! | `tick`, `tick.ns` | in `tick` mode, a counter and kvmclock time about every 100 ms |
//! | `acpi.events`, `acpi.sci_route`, `acpi.event` | in `wait` mode: what was armed, where the SCI goes, what arrived |
//! | `poweroff.error` | S5 could not be entered (followed by `panic=`) |
//! | `log.warn`, `log.error` | a message from a library (the `acpi` crate's table warnings) |
//! | `panic` | what went wrong (exceptions included); the guest then resets |

#![cfg_attr(not(test), no_std)]
#![cfg_attr(not(test), no_main)]

#[cfg(test)]
extern crate std;

pub mod aml;
pub mod bootinfo;
pub mod cidata;
pub mod cmdline;
pub mod cpuid;
pub mod rtc;
pub mod smp;

#[cfg(not(test))]
pub mod blk;
#[cfg(not(test))]
pub mod boot;
#[cfg(not(test))]
pub mod console;
#[cfg(not(test))]
pub mod dma;
#[cfg(not(test))]
pub mod doorbell;
#[cfg(not(test))]
pub mod events;
#[cfg(not(test))]
pub mod heap;
#[cfg(not(test))]
pub mod interrupts;
#[cfg(not(test))]
pub mod ioapic;
#[cfg(not(test))]
pub mod kvmclock;
#[cfg(not(test))]
pub mod lapic;
#[cfg(not(test))]
pub mod logger;
#[cfg(not(test))]
pub mod net;
#[cfg(not(test))]
pub mod paging;
#[cfg(not(test))]
pub mod pci;
#[cfg(not(test))]
pub mod pit;
#[cfg(not(test))]
pub mod power;
#[cfg(not(test))]
pub mod rng;
#[cfg(not(test))]
pub mod serial;
#[cfg(not(test))]
pub mod tables;
#[cfg(not(test))]
pub mod user;
#[cfg(not(test))]
pub mod vsock;

#[cfg(test)]
pub mod tables {
    //! Host builds (unit tests) only need the CPU limit.
    pub const MAX_CPUS: usize = 64;
}

#[cfg(not(test))]
mod guest {
    use crate::bootinfo::{BootInfo, BootInfoError, Escaped, PhysMem};
    use crate::cmdline::Options;
    use crate::lapic::Lapic;
    use crate::{
        boot, cpuid, interrupts, kv, kvmclock, logger, pci, pit, power, rtc, serial, smp, tables,
    };

    /// Guest-physical memory through the identity map (the low 4 GiB).
    struct Identity;

    impl PhysMem for Identity {
        fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), BootInfoError> {
            let end = addr.checked_add(buf.len() as u64);
            if addr == 0 || end.is_none_or(|e| e > 1 << 32) {
                return Err(BootInfoError::Unmapped {
                    what: "boot data",
                    addr,
                });
            }
            // SAFETY: the range lies in the identity-mapped low 4 GiB and is non-null; the VMM
            // put the boot structures there.
            unsafe {
                core::ptr::copy_nonoverlapping(addr as *const u8, buf.as_mut_ptr(), buf.len())
            };
            Ok(())
        }
    }

    fn report_boot(info: &BootInfo) {
        kv!("boot", "{}", info.mode.as_str());
        kv!("boot.info_addr", "{:#x}", info.info_addr);
        kv!("boot.version", "{:#x}", info.version);
        kv!("cmdline", "{}", Escaped(info.cmdline()));
        if info.cmdline_truncated {
            kv!("cmdline.truncated", "1");
        }
        kv!("e820.count", "{}", info.e820().len());
        for (i, e) in info.e820().iter().enumerate() {
            kv!(
                core::format_args!("e820.{i}"),
                "{:#x},{:#x},{}",
                e.addr,
                e.size,
                e.kind
            );
        }
        kv!("mem.total", "{}", info.ram_total());
        match info.initrd {
            Some((start, size)) => {
                kv!("initrd", "{start:#x},{size:#x}");
                let in_ram = start.checked_add(size).is_some_and(|end| {
                    info.e820().iter().any(|e| {
                        e.kind == crate::bootinfo::E820_RAM
                            && e.addr <= start
                            && e.addr.saturating_add(e.size) >= end
                    })
                });
                if in_ram {
                    // RAM above 4 GiB is outside the boot identity map: map it first.
                    crate::paging::identity_map(start, size, true);
                }
                match start.checked_add(size) {
                    Some(_) if start != 0 && in_ram => {
                        // SAFETY: the initrd lies in e820 RAM, identity-mapped (above), where
                        // the VMM loaded it; it is only read.
                        let bytes = unsafe {
                            core::slice::from_raw_parts(start as *const u8, size as usize)
                        };
                        kv!("initrd.crc32", "{:#010x}", crc32fast::hash(bytes));
                    }
                    _ => kv!("initrd.crc32", "not in RAM"),
                }
            }
            None => kv!("initrd", "none"),
        }
    }

    fn report_timers(platform: &tables::Platform, lapic: Lapic) -> Option<kvmclock::KvmClock> {
        // LAPIC timer: one-shot interrupt on TIMER_VECTOR.
        lapic.one_shot(interrupts::TIMER_VECTOR, 0x1000);
        x86_64::instructions::interrupts::enable();
        let fired = pit::wait_until(1_000_000, || {
            interrupts::count(interrupts::TIMER_VECTOR) > 0
        });
        x86_64::instructions::interrupts::disable();
        kv!("lapic.timer", "{}", if fired { "fired" } else { "silent" });

        let clock = kvmclock::KvmClock::enable();
        match &clock {
            Some(clock) => {
                let (t0, flags) = clock.now_ns();
                pit::wait_us(1_000);
                let (t1, _) = clock.now_ns();
                kv!(
                    "kvmclock",
                    "{}",
                    if t1 > t0 { "advancing" } else { "stuck" }
                );
                kv!(
                    "kvmclock.stable",
                    "{}",
                    u8::from(flags & kvmclock::PVCLOCK_TSC_STABLE_BIT != 0)
                );
                kv!("kvmclock.boot_unix", "{}", clock.boot_wall_clock());
                kv!("kvmclock.ns", "{t1}");
            }
            None => kv!("kvmclock", "absent"),
        }

        let century = platform.fadt.map_or(0, |f| f.century);
        match rtc::read(century) {
            Some((_, dt)) => kv!("rtc", "{dt}"),
            None => kv!("rtc", "invalid"),
        }
        clock
    }

    /// The boot processor's Rust entry, called from `common64` in [`boot`].
    #[no_mangle]
    extern "C" fn guest_main(mode: u64, info_addr: u64) -> ! {
        serial::init();
        interrupts::init();
        logger::init();
        // Start on a fresh line: firmware may have left a partial one on the console.
        use core::fmt::Write as _;
        let _ = serial::Line::lock().write_str("\n");
        kv!("guest", "monovirt-test-guest {}", env!("CARGO_PKG_VERSION"));
        let info = match mode {
            boot::MODE_PVH => BootInfo::from_pvh(&Identity, info_addr),
            boot::MODE_LINUX64 => BootInfo::from_boot_params(&Identity, info_addr),
            _ => panic!("unknown entry mode {mode}"),
        };
        let info = match info {
            Ok(info) => info,
            Err(e) => panic!("boot data: {e}"),
        };
        report_boot(&info);
        let options = Options::parse(info.cmdline());
        kv!("action", "{}", options.action.as_str());
        kv!("smp.enabled", "{}", u8::from(options.smp));

        cpuid::report();
        let platform = tables::walk(info.rsdp);
        power::remember(&platform);
        if let Some(fadt) = &platform.fadt {
            power::enable_acpi_mode(fadt);
        }

        pit::init();
        let ch0 = pit::ch0_counting();
        kv!("pit.ch0", "{}", if ch0 { "counting" } else { "stuck" });
        let (ch2_moved, out2) = pit::ch2_one_shot();
        kv!(
            "pit.ch2",
            "{}{}",
            if ch2_moved { "counting" } else { "stuck" },
            if out2 { "" } else { ",out2-low" }
        );

        let lapic = Lapic::current();
        lapic.enable();
        let bsp_id = lapic.id();
        kv!("lapic.mode", "{}", lapic.mode());
        kv!("lapic.id", "{bsp_id}");
        kv!(
            "lapic.version",
            "{:#x}",
            lapic.read(crate::lapic::REG_VERSION)
        );
        kv!("smp.cpu.0", "{bsp_id}");
        kv!("smp.cpu.0.cpuid_apic_id", "{}", cpuid::apic_ids().0);
        let hypervisor = cpuid::hypervisor_signature().is_some();
        let online = if options.smp && platform.cpu_count > 1 {
            smp::start_aps(lapic, bsp_id, platform.cpus(), info.e820(), hypervisor)
        } else {
            1
        };
        kv!("smp.online", "{online}");
        kv!("smp.expected", "{}", platform.cpu_count);

        let clock = report_timers(&platform, lapic);
        pci::report(&platform, &options);
        kv!("done", "1");
        power::perform(options.action, &platform, clock, bsp_id)
    }

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        use core::fmt::Write as _;
        use x86_64::instructions::segmentation::{Segment, CS};
        // At CPL 3 ([`crate::user`]) interrupts are off already, and `cli` would fault.
        if CS::get_reg().rpl() == x86_64::PrivilegeLevel::Ring0 {
            x86_64::instructions::interrupts::disable();
        }
        {
            let mut line = serial::Line::force();
            let _ = write!(line, "panic={}", info.message());
            if let Some(loc) = info.location() {
                let _ = write!(line, " at {}:{}", loc.file(), loc.line());
            }
            let _ = line.write_str("\n");
        }
        power::reset(&power::platform())
    }
}
