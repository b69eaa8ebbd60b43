//! The ppc64le (pseries) guest physical address map.
//!
//! ```text
//! 0x0000_0000  kernel (vmlinux PT_LOAD segments at their physical addresses; Linux
//!              runs its exception vectors from 0)
//! kernel end   initrd, 64 KiB aligned
//! RMA top - 1 MiB - 4 KiB  RTAS blob (the `sc 1` trampoline Linux calls)
//! RMA top - 1 MiB          flattened device tree (up to 1 MiB)
//! RAM end
//! 0x2_0000_0000_0000 PCI host bridge windows (outside RAM, per the PHB node's ranges)
//! ```
//!
//! The real mode area (RMA) is the memory a guest can reach with translation off: Linux
//! reads the device tree and calls RTAS there before its MMU is on, so both sit below
//! [`rma_size`].

use vm_memory::GuestAddress;

/// Where vmlinux is loaded (its `PT_LOAD` physical addresses are relative to 0).
pub const KERNEL_START: u64 = 0;
/// Largest real mode area we present (QEMU's pseries uses the same 1 GiB cap).
pub const RMA_MAX: u64 = 1 << 30;
/// Space reserved for the flattened device tree.
pub const FDT_MAX_SIZE: u64 = 0x10_0000;
/// Space reserved for the RTAS blob below the device tree.
pub const RTAS_SIZE: u64 = 0x1000;
/// Alignment of the initrd after the kernel.
pub const INITRD_ALIGN: u64 = 0x1_0000;
/// The vty (hvterm1) unit address on the vio bus.
pub const VTY_REG: u32 = 0x3000_0000;
/// The PCI host bridge's BUID (its unit address).
pub const PHB_BUID: u64 = 0x800_0000_2000_0000;
/// Start of the PHB's 32-bit MMIO window in guest physical space.
pub const PHB_MMIO32_START: u64 = 0x2_0000_8000_0000;
/// Size of the PHB's 32-bit MMIO window (PCI addresses 0x8000_0000..0x1_0000_0000).
pub const PHB_MMIO32_SIZE: u64 = 0x8000_0000;
/// Start of the PHB's 64-bit MMIO window.
pub const PHB_MMIO64_START: u64 = 0x2_1000_0000_0000;
/// Size of the PHB's 64-bit MMIO window.
pub const PHB_MMIO64_SIZE: u64 = 0x10_0000_0000;
/// The PHB's I/O window (PIO) in guest physical space.
pub const PHB_IO_START: u64 = 0x2_0000_0000_0000;
/// Size of the PHB's I/O window.
pub const PHB_IO_SIZE: u64 = 0x1_0000;

/// Most vCPUs: the XICS interrupt server range the device tree describes is sized by
/// this, and KVM-HV's own limit per VM is higher on every POWER9/10 host.
pub const MAX_VCPUS: usize = 256;

/// The guest RAM regions for `mem_size` bytes of RAM: one from 0 (device windows are far above any RAM size, see the map above).
pub fn ram_regions(mem_size: u64) -> Vec<(GuestAddress, u64)> {
    vec![(GuestAddress(0), mem_size)]
}

/// The real mode area for `mem_size` bytes of RAM.
pub fn rma_size(mem_size: u64) -> u64 {
    mem_size.min(RMA_MAX)
}

/// Where the device tree goes: the last [`FDT_MAX_SIZE`] of the RMA.
pub fn fdt_address(mem_size: u64) -> Option<u64> {
    rma_size(mem_size).checked_sub(FDT_MAX_SIZE)
}

/// Where the RTAS blob goes: just below the device tree.
pub fn rtas_address(mem_size: u64) -> Option<u64> {
    fdt_address(mem_size)?.checked_sub(RTAS_SIZE)
}

/// Where the initrd goes: the first [`INITRD_ALIGN`] boundary at or after `kernel_end`.
pub fn initrd_address(kernel_end: u64) -> Option<u64> {
    kernel_end
        .checked_add(INITRD_ALIGN - 1)
        .map(|a| a & !(INITRD_ALIGN - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_data_sits_at_the_top_of_the_rma() {
        // 512 MiB of RAM: the whole of it is RMA.
        assert_eq!(fdt_address(512 << 20), Some(0x1ff0_0000));
        assert_eq!(rtas_address(512 << 20), Some(0x1fef_f000));
        // 4 GiB of RAM: the RMA stops at 1 GiB, and so does the boot data.
        assert_eq!(fdt_address(4 << 30), Some(0x3ff0_0000));
        assert_eq!(fdt_address(0x8_0000), None);
    }

    #[test]
    fn initrd_follows_the_kernel_64k_aligned() {
        assert_eq!(initrd_address(0x1_0000), Some(0x1_0000));
        assert_eq!(initrd_address(0x1_0001), Some(0x2_0000));
        assert_eq!(initrd_address(u64::MAX), None);
    }
}
