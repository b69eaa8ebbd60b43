//! The boot vCPU's entry state for a ppc64le Linux kernel entered directly with a
//! flattened device tree (no Open Firmware), as Linux's `__start` in
//! arch/powerpc/kernel/head_64.S expects it: r3 = physical address of the device tree,
//! r4 = physical address the kernel runs at (0 here), r5 = 0 ("no OF client interface",
//! which sends Linux down its FDT path instead of prom_init), PC = the ELF entry, MSR with
//! 64-bit mode (SF) and machine checks enabled (ME), translation and interrupts off.
//!
//! MSR_LE is left clear: a little-endian kernel starts with the FIXUP_ENDIAN sequence,
//! which is valid in either byte order and switches to little-endian itself, so the same
//! state boots big- and little-endian kernels (QEMU's pseries enters the same way).

/// MSR[SF]: 64-bit mode (bit 0 in IBM numbering, the most significant bit).
pub const MSR_SF: u64 = 1 << 63;
/// MSR[ME]: machine check interrupts enabled.
pub const MSR_ME: u64 = 1 << 12;
/// MSR[LE]: little-endian mode.
pub const MSR_LE: u64 = 1;

/// The register values the boot vCPU starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootRegs {
    /// Program counter (NIP).
    pub pc: u64,
    /// Machine state register.
    pub msr: u64,
    /// General purpose registers r0..r31.
    pub gpr: [u64; 32],
}

/// The entry state for a kernel at `entry` with its device tree at `fdt`.
pub fn boot_regs(entry: u64, fdt: u64, kernel_base: u64) -> BootRegs {
    let mut gpr = [0u64; 32];
    gpr[3] = fdt;
    gpr[4] = kernel_base;
    gpr[5] = 0;
    BootRegs {
        pc: entry,
        msr: MSR_SF | MSR_ME,
        gpr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_state_matches_head_64() {
        let r = boot_regs(0x0, 0x1ff0_0000, 0);
        assert_eq!(r.gpr[3], 0x1ff0_0000);
        assert_eq!(r.gpr[4], 0);
        assert_eq!(r.gpr[5], 0, "r5 = 0 means no Open Firmware entry");
        assert_eq!(r.pc, 0);
        // SF | ME, nothing else: IR/DR (translation) and EE (interrupts) off.
        assert_eq!(r.msr, 0x8000_0000_0000_1000);
    }
}
