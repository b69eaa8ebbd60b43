//! monovirt's ppc64le test guest: a freestanding program entered the way a pseries Linux
//! kernel is (see `entry.S`) that reports, one `key=value` line per fact over the hvterm
//! console, what the VMM gave it, then ends through RTAS. The device tree is read by the
//! `fdt` crate, not by code of ours. Keys, in the order they are printed (numbers with
//! `0x` are hexadecimal, others decimal):
//!
//! | key | value |
//! | --- | --- |
//! | `guest` | `monovirt-ppc64le-test-guest <version>` |
//! | `entry.fdt`, `entry.r4`, `entry.r5` | r3, r4, r5 at entry |
//! | `msr` | the MSR after the switch to little-endian (SF, ME and LE; IR, DR, EE clear) |
//! | `hcall.set_mode_le` | status of H_SET_MODE (interrupts little-endian) |
//! | `fdt` | `ok` or why the tree was refused; `fdt.size` |
//! | `fdt.model`, `fdt.compatible`, `fdt.device_type` | of the root node |
//! | `console` | the `stdout-path` node; `console.reg`, `console.compatible` |
//! | `cmdline` | `/chosen/bootargs` |
//! | `initrd` | `start,end` (hex) or `none`; `initrd.crc32` (`0x%08x`) |
//! | `mem.N` | `start,size` of each memory region (hex); `mem.total` (decimal) |
//! | `cpus`, `cpu.N` | CPU nodes; `reg,interrupt-server` of each; `cpu.timebase` (Hz) |
//! | `hypervisor` | `/hypervisor` compatible |
//! | `xics` | the interrupt controller's compatible and `ibm,interrupt-server-ranges` |
//! | `pci.buid` | the host bridge's `reg` (its BUID); `pci.ranges` (entries) |
//! | `rtas.entry`, `rtas.size`, `rtas.services` | `linux,rtas-entry`, `rtas-size`, tokens |
//! | `rtas.display` | `ok`: this line's text went out through `display-character` |
//! | `rtas.time` | `get-time-of-day` as `YYYY-MM-DDTHH:MM:SS`, or the failing status |
//! | `pci.00:DD.0` | `vendor:device` of each function `ibm,read-pci-config` finds; `pci.count` |
//! | `pci.empty_slot` | the status of a read of an empty slot (-1: hardware error) |
//! | `hvterm.get` | `status,count` of H_GET_TERM_CHAR |
//! | `timebase` | `advancing` or `stuck` |
//! | `action`, `done` | what happens next; `1`: everything above was printed |
//! | `end.error` | the RTAS call that should have ended the guest returned (its status) |
//! | `panic`, `exception` | what went wrong; the guest then powers off |

#![cfg_attr(not(test), no_std)]
#![cfg_attr(not(test), no_main)]

#[cfg(test)]
extern crate std;

pub mod civil;
pub mod cmdline;
pub mod rtas_args;

#[cfg(not(test))]
pub mod papr;
#[cfg(not(test))]
mod report;

#[cfg(not(test))]
mod freestanding {
    use core::sync::atomic::{AtomicU64, Ordering};

    use crate::papr::Rtas;
    use crate::say;

    /// The RTAS entry and `power-off` token, once known, for the panic path.
    static RTAS_ENTRY: AtomicU64 = AtomicU64::new(0);
    static POWER_OFF: AtomicU64 = AtomicU64::new(0);

    /// Remembers how to power off from a panic.
    pub fn set_power_off(entry: u64, token: u32) {
        RTAS_ENTRY.store(entry, Ordering::Relaxed);
        POWER_OFF.store(u64::from(token), Ordering::Relaxed);
    }

    fn power_off_or_spin() -> ! {
        let entry = RTAS_ENTRY.load(Ordering::Relaxed);
        let token = POWER_OFF.load(Ordering::Relaxed) as u32;
        if entry != 0 {
            let _ = Rtas { entry }.call(token, &[0, 0], 1);
        }
        loop {
            core::hint::spin_loop();
        }
    }

    /// Called by `_start` (entry.S) with the entry registers.
    #[no_mangle]
    extern "C" fn guest_main(fdt: u64, r4: u64, r5: u64, msr: u64) -> ! {
        crate::report::run(fdt, r4, r5, msr);
        power_off_or_spin()
    }

    /// Called by every exception vector (entry.S).
    #[no_mangle]
    extern "C" fn guest_exception(vector: u64, srr0: u64, srr1: u64, dar: u64) -> ! {
        say!("exception={vector:#x} srr0={srr0:#x} srr1={srr1:#x} dar={dar:#x}");
        power_off_or_spin()
    }

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo) -> ! {
        say!("panic={info}");
        power_off_or_spin()
    }
}

#[cfg(not(test))]
pub use freestanding::set_power_off;
