//! The x86_64 guest physical address map.
//!
//! ```text
//! 0x0000_0500  boot GDT            0x0000_6000  PVH hvm_start_info, modlist, memmap
//! 0x0000_7000  boot_params (zero page)
//! 0x0000_9000  PML4, PDPT, 4 PDs (identity map of the first 4 GiB, 2 MiB pages)
//! 0x0002_0000  kernel command line (up to 64 KiB)
//! 0x0009_fc00  EBDA .. 0x0010_0000: reserved; ACPI tables at 0x000e_0000 (RSDP first)
//! 0x0010_0000  kernel (HIMEM_START) .. RAM .. initrd at the top of low RAM
//! 0xc000_0000  32-bit MMIO window for PCI BARs (512 MiB)
//! 0xe000_0000  PCI ECAM (256 buses, 256 MiB), reserved in e820 and described by MCFG
//! 0xfec0_0000  IOAPIC        0xfee0_0000  local APIC
//! 0xfffb_c000  KVM identity-map page, 0xfffb_d000 KVM TSS (3 pages)
//! 4 GiB        RAM above the hole, then the 64-bit MMIO window (1 GiB aligned)
//! ```

use vm_memory::GuestAddress;

/// Start of the boot GDT (four 8-byte entries).
pub const BOOT_GDT_START: u64 = 0x500;
/// Start of the boot IDT (an empty table: the guest installs its own).
pub const BOOT_IDT_START: u64 = 0x520;
/// Where the PVH `hvm_start_info` is written.
pub const PVH_INFO_START: u64 = 0x6000;
/// Where the PVH module list (the initrd) is written.
pub const PVH_MODLIST_START: u64 = 0x6040;
/// Where the PVH memory map is written.
pub const PVH_MEMMAP_START: u64 = 0x6100;
/// Maximum PVH memory map entries that fit below the zero page.
pub const PVH_MEMMAP_MAX_ENTRIES: usize = ((ZERO_PAGE_START - PVH_MEMMAP_START) / 24) as usize;
/// The Linux boot protocol's `boot_params` ("zero page").
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Level 4 page table; PDPT and page directories follow page by page.
pub const PML4_START: u64 = 0x9000;
/// Page directory pointer table.
pub const PDPT_START: u64 = 0xa000;
/// First of four page directories (each maps 1 GiB with 2 MiB pages).
pub const PD_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Maximum command line length including its NUL.
pub const CMDLINE_MAX_SIZE: usize = 0x10000;
/// Initial stack pointer for the boot vCPU (below the command line, above the tables).
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Start of the extended BIOS data area; RAM below it is usable.
pub const EBDA_START: u64 = 0x9fc00;
/// ACPI tables live from here to `HIMEM_START`; the RSDP is first (16-byte aligned,
/// inside the BIOS area Linux scans).
pub const ACPI_START: u64 = 0xe0000;
/// First byte above the legacy BIOS area: where kernels are loaded.
pub const HIMEM_START: u64 = 0x10_0000;

/// Start of the 32-bit MMIO hole below 4 GiB.
pub const MMIO32_START: u64 = 0xc000_0000;
/// Size of the PCI 32-bit MMIO window at `MMIO32_START`.
pub const MMIO32_SIZE: u64 = 0x2000_0000;
/// PCI Express enhanced configuration space (ECAM) base.
pub const PCI_ECAM_START: u64 = 0xe000_0000;
/// ECAM size: 1 MiB per bus.
pub const PCI_ECAM_SIZE: u64 = 0x1000_0000;
/// Last PCI bus number the ECAM window covers.
pub const PCI_LAST_BUS: u8 = ((PCI_ECAM_SIZE >> 20) - 1) as u8;
/// IOAPIC MMIO base.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// Local APIC MMIO base.
pub const APIC_START: u64 = 0xfee0_0000;
/// KVM's identity-map page (needed by KVM on Intel for real mode).
pub const KVM_IDENTITY_MAP_START: u64 = 0xfffb_c000;
/// KVM's TSS area (three pages).
pub const KVM_TSS_START: u64 = 0xfffb_d000;
/// 4 GiB: RAM above the hole starts here.
pub const FIRST_ADDR_PAST_32BITS: u64 = 1 << 32;
/// Size of the 64-bit PCI MMIO window above RAM.
pub const MMIO64_SIZE: u64 = 64 << 30;

/// Legacy I/O port of COM1.
pub const COM1_PORT: u16 = 0x3f8;
/// ISA IRQ (and GSI) of COM1.
pub const COM1_IRQ: u32 = 4;
/// i8042 data port.
pub const I8042_DATA_PORT: u16 = 0x60;
/// i8042 command/status port.
pub const I8042_COMMAND_PORT: u16 = 0x64;
/// CMOS RTC index port (data at +1).
pub const RTC_PORT: u16 = 0x70;
/// ACPI PM1a event block (status + enable, 2 bytes each).
pub const PM1A_EVT_PORT: u16 = 0x600;
/// ACPI PM1a control block (2 bytes).
pub const PM1A_CNT_PORT: u16 = 0x604;
/// ACPI reset register (1 byte), named by the FADT.
pub const ACPI_RESET_PORT: u16 = 0x608;
/// Value the guest writes to `ACPI_RESET_PORT` to reset.
pub const ACPI_RESET_VALUE: u8 = 0x1;
/// Length of the PM I/O range (event + control + reset).
pub const PM_IO_LEN: u16 = 0x9;
/// SCI interrupt (ISA IRQ 9, level, active high per the MADT override).
pub const SCI_IRQ: u32 = 9;
/// Sleep type the DSDT's `\_S5` names; PM1 control SLP_TYP == this and SLP_EN is poweroff.
pub const S5_SLEEP_TYPE: u8 = 5;

/// Largest number of vCPUs: xAPIC IDs are 8 bits and 0xff is the broadcast ID.
pub const MAX_VCPUS: usize = 254;

// The fixed areas must not overlap; checked at compile time.
const _: () = {
    assert!(PVH_MEMMAP_START + 24 * PVH_MEMMAP_MAX_ENTRIES as u64 <= ZERO_PAGE_START);
    assert!(ZERO_PAGE_START + 0x1000 <= BOOT_STACK_POINTER);
    assert!(BOOT_STACK_POINTER < PML4_START);
    assert!(PD_START + 4 * 0x1000 <= CMDLINE_START);
    assert!(CMDLINE_START + CMDLINE_MAX_SIZE as u64 <= EBDA_START);
    assert!(MMIO32_START + MMIO32_SIZE <= PCI_ECAM_START);
    assert!(PCI_ECAM_START + PCI_ECAM_SIZE <= IOAPIC_START);
    assert!(PCI_LAST_BUS == 255);
};

/// The guest RAM regions for `mem_size` bytes of RAM: below the 32-bit hole, and the
/// rest from 4 GiB up.
///
/// ```
/// use arch::x86_64::layout::{ram_regions, FIRST_ADDR_PAST_32BITS, MMIO32_START};
/// let regions = ram_regions(4 << 30);
/// assert_eq!(regions[0].0.0, 0);
/// assert_eq!(regions[0].1, MMIO32_START);
/// assert_eq!(regions[1].0.0, FIRST_ADDR_PAST_32BITS);
/// assert_eq!(regions[0].1 + regions[1].1, 4 << 30);
/// ```
pub fn ram_regions(mem_size: u64) -> Vec<(GuestAddress, u64)> {
    if mem_size <= MMIO32_START {
        vec![(GuestAddress(0), mem_size)]
    } else {
        vec![
            (GuestAddress(0), MMIO32_START),
            (
                GuestAddress(FIRST_ADDR_PAST_32BITS),
                mem_size - MMIO32_START,
            ),
        ]
    }
}

/// End (exclusive) of RAM below 4 GiB.
pub fn low_ram_end(mem_size: u64) -> u64 {
    mem_size.min(MMIO32_START)
}

/// End (exclusive) of all RAM.
pub fn ram_end(mem_size: u64) -> u64 {
    match ram_regions(mem_size).last() {
        Some((start, size)) => start.0 + size,
        None => 0,
    }
}

/// Start of the 64-bit PCI MMIO window: the first 1 GiB boundary past RAM and past 4 GiB.
pub fn mmio64_start(mem_size: u64) -> u64 {
    let end = ram_end(mem_size).max(FIRST_ADDR_PAST_32BITS);
    end.div_ceil(1 << 30) * (1 << 30)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_memory_is_one_region() {
        assert_eq!(ram_regions(256 << 20), vec![(GuestAddress(0), 256 << 20)]);
        assert_eq!(low_ram_end(256 << 20), 256 << 20);
        assert_eq!(mmio64_start(256 << 20), FIRST_ADDR_PAST_32BITS);
    }

    #[test]
    fn large_memory_skips_the_hole() {
        let r = ram_regions(5 << 30);
        assert_eq!(r.len(), 2);
        assert_eq!(r[1], (GuestAddress(1 << 32), (5 << 30) - MMIO32_START));
        assert_eq!(ram_end(5 << 30), (1 << 32) + (5 << 30) - MMIO32_START);
        assert_eq!(mmio64_start(5 << 30), 6 << 30);
        assert_eq!(mmio64_start((5 << 30) + 1), 7 << 30);
    }
}
