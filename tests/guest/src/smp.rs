//! Application-processor bring-up through the local APIC, as Linux does it: the real-mode
//! trampoline from [`crate::boot`] is copied to a free page below 1 MiB, then each AP the MADT
//! lists gets INIT, SIPI, SIPI. An AP switches to long mode, prints `smp.cpu.N=<apic id>`,
//! counts itself online and halts.

use crate::bootinfo::{E820Entry, E820_RAM};
#[cfg(not(test))]
pub use bringup::start_aps;

/// Picks the highest page below 0xA0000 (and above the first page) that the e820 map calls
/// RAM, for the trampoline.
pub fn trampoline_page(e820: &[E820Entry]) -> Option<u64> {
    let mut page = 0x9f000u64;
    while page >= 0x1000 {
        let usable = e820.iter().any(|e| {
            e.kind == E820_RAM && e.addr <= page && e.addr.saturating_add(e.size) >= page + 0x1000
        });
        if usable {
            return Some(page);
        }
        page -= 0x1000;
    }
    None
}

#[cfg(not(test))]
mod bringup {
    use super::trampoline_page;
    use crate::bootinfo::E820Entry;
    use crate::lapic::{Lapic, ICR_INIT, ICR_STARTUP};
    use crate::tables::MAX_CPUS;
    use crate::{kv, pit};
    use core::cell::UnsafeCell;
    use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

    const AP_STACK_SIZE: usize = 16 * 1024;

    #[repr(C, align(16))]
    struct Stacks(UnsafeCell<[[u8; AP_STACK_SIZE]; MAX_CPUS]>);

    // SAFETY: each AP uses only its own slot, handed out one at a time by the boot processor.
    unsafe impl Sync for Stacks {}

    // Not cleared at entry (see link.ld): a stack is written before it is read.
    #[link_section = ".noinit"]
    static AP_STACKS: Stacks = Stacks(UnsafeCell::new([[0; AP_STACK_SIZE]; MAX_CPUS]));

    /// The stack top the next AP loads in `common64` (read from assembly).
    #[no_mangle]
    static AP_STACK_TOP: AtomicU64 = AtomicU64::new(0);
    /// The slot (CPU number) of the AP being started.
    static AP_SLOT: AtomicUsize = AtomicUsize::new(0);
    /// The boot CPU's [`comparable_features`], for the APs to compare theirs with.
    static BSP_FEATURES: [AtomicU32; 8] = [const { AtomicU32::new(0) }; 8];

    /// The CPUID feature words every vCPU should see alike (leaf 1 EBX, which carries the
    /// APIC ID, is left out).
    fn comparable_features() -> [u32; 8] {
        let r = crate::cpuid::feature_regs();
        [
            r.leaf1[0], r.leaf1[2], r.leaf1[3], r.leaf7[1], r.leaf7[2], r.leaf7[3], r.ext1[2],
            r.ext1[3],
        ]
    }

    /// APs that reached `ap_main`.
    static AP_ONLINE: AtomicUsize = AtomicUsize::new(0);

    /// Starts every CPU in `cpus` except `bsp_id`; returns how many are online (the BSP included).
    pub fn start_aps(
        lapic: Lapic,
        bsp_id: u32,
        cpus: &[u32],
        e820: &[E820Entry],
        hypervisor: bool,
    ) -> usize {
        for (slot, value) in BSP_FEATURES.iter().zip(comparable_features()) {
            slot.store(value, Ordering::Relaxed);
        }
        let Some(page) = trampoline_page(e820) else {
            kv!(
                "smp.error",
                "no free page below 640 KiB for the AP trampoline"
            );
            return 1;
        };
        // The linker places both symbols around the trampoline's bytes in the image.
        let (start, end) = (
            core::ptr::addr_of!(crate::boot::ap_tramp_start),
            core::ptr::addr_of!(crate::boot::ap_tramp_end),
        );
        let len = end as usize - start as usize;
        // SAFETY: `page` is a whole page of RAM by the e820 map, identity-mapped, and nothing of
        // ours lives below 1 MiB (the boot structures were copied out already).
        unsafe { core::ptr::copy_nonoverlapping(start, page as *mut u8, len) };
        kv!("smp.trampoline", "{page:#x}");
        let vector = (page >> 12) as u32;
        // Linux skips the 10 ms INIT de-assert wait on CPUs that do not need it; a vCPU never does.
        let init_wait_us = if hypervisor { 10 } else { 10_000 };
        // Likewise after each SIPI: 10 us where Linux skips the long delays, 200 us otherwise.
        let sipi_wait_us = if hypervisor { 10 } else { 200 };
        for (slot, &apic_id) in (1..MAX_CPUS).zip(cpus.iter().filter(|&&id| id != bsp_id)) {
            let stack_top = AP_STACKS.0.get() as u64 + ((slot + 1) * AP_STACK_SIZE) as u64;
            AP_STACK_TOP.store(stack_top, Ordering::Release);
            AP_SLOT.store(slot, Ordering::Release);
            let before = AP_ONLINE.load(Ordering::Acquire);
            let mut sent = lapic.send_ipi(apic_id, ICR_INIT);
            pit::wait_us(init_wait_us);
            for _ in 0..2 {
                sent &= lapic.send_ipi(apic_id, ICR_STARTUP | vector);
                pit::wait_us(sipi_wait_us);
            }
            let online = pit::wait_until(2_000_000, || AP_ONLINE.load(Ordering::Acquire) > before);
            if !online {
                kv!(
                    core::format_args!("smp.timeout.{slot}"),
                    "{apic_id}{}",
                    if sent { "" } else { ",ipi-pending" }
                );
            }
        }
        1 + AP_ONLINE.load(Ordering::Acquire)
    }

    /// Where an AP lands in Rust, on its own stack, with our GDT and page tables.
    #[no_mangle]
    extern "C" fn ap_main() -> ! {
        crate::interrupts::load();
        let lapic = Lapic::current();
        lapic.enable();
        let slot = AP_SLOT.load(Ordering::Acquire);
        let (cpuid_id, x2apic_id) = crate::cpuid::apic_ids();
        kv!(core::format_args!("smp.cpu.{slot}"), "{}", lapic.id());
        kv!(
            core::format_args!("smp.cpu.{slot}.cpuid_apic_id"),
            "{cpuid_id}"
        );
        if let Some(x2) = x2apic_id {
            kv!(core::format_args!("smp.cpu.{slot}.x2apic_id"), "{x2}");
        }
        let same = BSP_FEATURES
            .iter()
            .zip(comparable_features())
            .all(|(bsp, mine)| bsp.load(Ordering::Relaxed) == mine);
        kv!(
            core::format_args!("smp.cpu.{slot}.features"),
            "{}",
            if same { "same" } else { "differs" }
        );
        AP_ONLINE.fetch_add(1, Ordering::AcqRel);
        loop {
            x86_64::instructions::interrupts::disable();
            x86_64::instructions::hlt();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_highest_ram_page_below_640k() {
        let e820 = [
            E820Entry {
                addr: 0,
                size: 0x9fc00,
                kind: 1,
            },
            E820Entry {
                addr: 0x9fc00,
                size: 0x400,
                kind: 2,
            },
        ];
        assert_eq!(trampoline_page(&e820), Some(0x9e000));
        let low = [E820Entry {
            addr: 0x1000,
            size: 0x2000,
            kind: 1,
        }];
        assert_eq!(trampoline_page(&low), Some(0x2000));
        assert_eq!(
            trampoline_page(&[E820Entry {
                addr: 0x100000,
                size: 0x100000,
                kind: 1
            }]),
            None
        );
    }
}
