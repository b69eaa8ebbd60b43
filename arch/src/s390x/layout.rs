//! The s390x guest physical address map (Linux's arch/s390 boot ABI).
//!
//! ```text
//! 0x0000_0000  lowcore of CPU 0 (prefix 0; 8 KiB, see `lowcore`), the kernel image
//!              is loaded from 0 and its head overlays the lowcore's IPL PSW
//! 0x0001_0000  kernel entry (STARTUP_NORMAL_OFFSET)
//! 0x0001_0400  parameter area: IPL device, initrd start/size, ... (PARMAREA)
//! 0x0001_0480  kernel command line (COMMAND_LINE_OFFSET)
//! 0x0080_0000  initrd (QEMU's s390-ccw default INITRD_START), or after the kernel
//! ```

use vm_memory::GuestAddress;

/// Size of one CPU's prefix area (lowcore): two 4 KiB pages in z/Architecture.
pub const LOWCORE_SIZE: u64 = 0x2000;
/// Where the kernel image is loaded.
pub const KERNEL_LOAD: u64 = 0;
/// The kernel's normal entry point (arch/s390 `STARTUP_NORMAL_OFFSET`).
pub const KERNEL_ENTRY: u64 = 0x1_0000;
/// Start of the parameter area (`PARMAREA`).
pub const PARMAREA: u64 = 0x1_0400;
/// IPL device (`IPL_DEVICE_OFFSET`), 8 bytes.
pub const IPL_DEVICE_OFFSET: u64 = 0x1_0400;
/// Initrd start address (`INITRD_START_OFFSET`), 8 bytes.
pub const INITRD_START_OFFSET: u64 = 0x1_0408;
/// Initrd size (`INITRD_SIZE_OFFSET`), 8 bytes.
pub const INITRD_SIZE_OFFSET: u64 = 0x1_0410;
/// Old memory base for kdump (`OLDMEM_BASE_OFFSET`).
pub const OLDMEM_BASE_OFFSET: u64 = 0x1_0418;
/// Old memory size for kdump (`OLDMEM_SIZE_OFFSET`).
pub const OLDMEM_SIZE_OFFSET: u64 = 0x1_0420;
/// Kernel version pointer (`KERNEL_VERSION_OFFSET`).
pub const KERNEL_VERSION_OFFSET: u64 = 0x1_0428;
/// Maximum command line size the kernel accepts, 8 bytes (0 means the legacy 896).
pub const MAX_COMMAND_LINE_SIZE_OFFSET: u64 = 0x1_0430;
/// Kernel command line (`COMMAND_LINE_OFFSET`).
pub const COMMAND_LINE_OFFSET: u64 = 0x1_0480;
/// The command line length every kernel accepts (the legacy `ARCH_COMMAND_LINE_SIZE`).
pub const LEGACY_COMMAND_LINE_SIZE: u64 = 896;
/// Default initrd address.
pub const INITRD_START: u64 = 0x80_0000;

/// Most vCPUs: the extended system control area KVM switches to holds 248 CPUs.
pub const MAX_VCPUS: usize = 248;

/// The guest RAM regions for `mem_size` bytes of RAM: one from 0 (s390x has no memory-mapped I/O: devices are reached through channel I/O).
pub fn ram_regions(mem_size: u64) -> Vec<(GuestAddress, u64)> {
    vec![(GuestAddress(0), mem_size)]
}

/// Where the initrd goes for a kernel image of `kernel_size` bytes loaded at 0: the
/// default address, or the next 1 MiB boundary after a kernel that reaches past it.
pub fn initrd_address(kernel_size: u64) -> Option<u64> {
    let after = kernel_size.checked_add(0xf_ffff)? & !0xf_ffff;
    Some(after.max(INITRD_START))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parmarea_offsets_are_the_linux_boot_abi() {
        // arch/s390/include/asm/setup.h: IPL_DEVICE_OFFSET 0x10400, INITRD_START_OFFSET
        // 0x10408, INITRD_SIZE_OFFSET 0x10410, COMMAND_LINE_OFFSET 0x10480.
        assert_eq!(PARMAREA, 0x10400);
        assert_eq!(INITRD_START_OFFSET - PARMAREA, 8);
        assert_eq!(INITRD_SIZE_OFFSET - PARMAREA, 0x10);
        assert_eq!(COMMAND_LINE_OFFSET, 0x10480);
        assert_eq!(KERNEL_ENTRY, 0x10000);
    }

    #[test]
    fn initrd_after_large_kernels() {
        assert_eq!(initrd_address(0x40_0000), Some(0x80_0000));
        assert_eq!(initrd_address(0x123_4567), Some(0x130_0000));
        assert_eq!(initrd_address(u64::MAX), None);
    }
}
