//! The KVM-HV side of a pseries guest (arch/powerpc/include/uapi/asm/kvm.h and the
//! POWER parts of linux/kvm.h): the HV machine type, the core registers through
//! `KVM_SET_REGS` (PC, MSR, GPRs), SPRs through ONE_REG (`KVM_REG_PPC_*`), the radix
//! MMU configuration `H_REGISTER_PROC_TBL` asks for, the in-kernel XICS interrupt
//! controller, and the `KVM_EXIT_PAPR_HCALL` exit.
//!
//! The structures and numbers are pure and tested on any host; the calls need a POWER
//! host with KVM-HV (or the nested path in docs/arches.md).

use std::fs::File;
use std::io;

use crate::kvm::fd::{read_ioctl, write_ioctl};
use crate::kvm::{DeviceAttr, EnableCap, Encoding, VcpuFd, VmFd};

const P: Encoding = Encoding::PowerPc;

/// `KVM_VM_PPC_HV`: the machine type of a KVM-HV VM.
pub const VM_TYPE_HV: u64 = 1;
/// `KVM_CAP_PPC_PAPR`.
pub const CAP_PPC_PAPR: u32 = 68;
/// `KVM_CAP_IRQ_XICS`.
pub const CAP_IRQ_XICS: u32 = 92;
/// `KVM_CAP_PPC_ENABLE_HCALL`.
pub const CAP_PPC_ENABLE_HCALL: u32 = 104;
/// `KVM_CAP_PPC_MMU_RADIX`.
pub const CAP_PPC_MMU_RADIX: u32 = 134;
/// `KVM_DEV_TYPE_XICS`.
pub const DEV_TYPE_XICS: u32 = 3;
/// `KVM_DEV_XICS_GRP_SOURCES`: one 64-bit attribute per interrupt source.
pub const DEV_XICS_GRP_SOURCES: u32 = 1;
/// `KVM_XICS_PRIORITY_SHIFT`.
pub const XICS_PRIORITY_SHIFT: u64 = 32;
/// `KVM_XICS_LEVEL_SENSITIVE`.
pub const XICS_LEVEL_SENSITIVE: u64 = 1 << 40;
/// `KVM_XICS_MASKED`.
pub const XICS_MASKED: u64 = 1 << 41;
/// `KVM_PPC_MMUV3_RADIX`.
pub const MMUV3_RADIX: u64 = 1;
/// `KVM_PPC_MMUV3_GTSE`: global TLB invalidation by the guest.
pub const MMUV3_GTSE: u64 = 2;

/// `KVM_REG_PPC`: the architecture field of a ONE_REG id.
pub const REG_PPC: u64 = 0x1000_0000_0000_0000;
/// `KVM_REG_SIZE_U32`.
pub const REG_SIZE_U32: u64 = 0x0020_0000_0000_0000;
/// `KVM_REG_SIZE_U64`.
pub const REG_SIZE_U64: u64 = 0x0030_0000_0000_0000;
/// `KVM_REG_PPC_LPCR_64`: logical partitioning control.
pub const REG_LPCR_64: u64 = REG_PPC | REG_SIZE_U64 | 0xb5;
/// `KVM_REG_PPC_ARCH_COMPAT`: the processor compatibility level (a logical PVR).
pub const REG_ARCH_COMPAT: u64 = REG_PPC | REG_SIZE_U32 | 0xb7;
/// `KVM_REG_PPC_TB_OFFSET`.
pub const REG_TB_OFFSET: u64 = REG_PPC | REG_SIZE_U64 | 0x9c;

/// The logical PVR of ISA 3.00 (POWER9) compatibility mode.
pub const PVR_ARCH_300: u32 = 0x0f00_0005;

/// `struct kvm_regs` on POWER.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    /// Program counter (NIP).
    pub pc: u64,
    /// Condition register.
    pub cr: u64,
    /// Count register.
    pub ctr: u64,
    /// Link register.
    pub lr: u64,
    /// Fixed-point exception register.
    pub xer: u64,
    /// Machine state register.
    pub msr: u64,
    /// Save/restore registers.
    pub srr0: u64,
    /// Save/restore register 1.
    pub srr1: u64,
    /// Process ID.
    pub pid: u64,
    /// SPRG0..7.
    pub sprg: [u64; 8],
    /// r0..r31.
    pub gpr: [u64; 32],
}

/// `struct kvm_ppc_mmuv3_cfg`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct MmuV3Cfg {
    flags: u64,
    process_table: u64,
}

/// `struct kvm_irq_level`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct IrqLevel {
    irq: u32,
    level: u32,
}

const KVM_GET_REGS: u64 = P.ior::<Regs>(0x81);
const KVM_SET_REGS: u64 = P.iow::<Regs>(0x82);
const KVM_IRQ_LINE: u64 = P.iow::<IrqLevel>(0x61);
const KVM_PPC_CONFIGURE_V3_MMU: u64 = P.iow::<MmuV3Cfg>(0xaf);

/// Reads PC, MSR and the GPRs.
pub fn get_regs(vcpu: &VcpuFd) -> io::Result<Regs> {
    let mut regs = Regs::default();
    // SAFETY: KVM_GET_REGS on POWER writes one struct kvm_regs, which `Regs` mirrors.
    unsafe { read_ioctl(vcpu, KVM_GET_REGS, &mut regs) }?;
    Ok(regs)
}

/// Writes PC, MSR and the GPRs.
pub fn set_regs(vcpu: &VcpuFd, regs: &Regs) -> io::Result<()> {
    // SAFETY: KVM_SET_REGS on POWER reads one struct kvm_regs, which `Regs` mirrors.
    unsafe { write_ioctl(vcpu, KVM_SET_REGS, regs) }.map(drop)
}

/// Puts the VM's MMU in radix mode with the guest's process table (what
/// `H_REGISTER_PROC_TBL` asks for), `flags` being [`MMUV3_RADIX`] | [`MMUV3_GTSE`].
pub fn configure_v3_mmu(vm: &VmFd, flags: u64, process_table: u64) -> io::Result<()> {
    let cfg = MmuV3Cfg {
        flags,
        process_table,
    };
    // SAFETY: KVM_PPC_CONFIGURE_V3_MMU reads one struct kvm_ppc_mmuv3_cfg.
    unsafe { write_ioctl(vm, KVM_PPC_CONFIGURE_V3_MMU, &cfg) }.map(drop)
}

/// Sets interrupt source `irq` of the in-kernel XICS to `level`.
pub fn irq_line(vm: &VmFd, irq: u32, level: bool) -> io::Result<()> {
    let l = IrqLevel {
        irq,
        level: u32::from(level),
    };
    // SAFETY: KVM_IRQ_LINE reads one struct kvm_irq_level.
    unsafe { write_ioctl(vm, KVM_IRQ_LINE, &l) }.map(drop)
}

/// Creates the in-kernel XICS and configures sources `first..first + count` (masked,
/// lowest priority, level- or edge-triggered).
pub fn create_xics(vm: &VmFd, first: u32, count: u32, level: bool) -> io::Result<File> {
    let xics = vm.create_device(DEV_TYPE_XICS)?;
    for irq in first..first + count {
        let mut state: u64 = (0xff << XICS_PRIORITY_SHIFT) | XICS_MASKED;
        if level {
            state |= XICS_LEVEL_SENSITIVE;
        }
        let attr = DeviceAttr {
            flags: 0,
            group: DEV_XICS_GRP_SOURCES,
            attr: u64::from(irq),
            addr: &mut state as *mut u64 as u64,
        };
        // SAFETY: a XICS source attribute is one u64 at `addr`, `state` here.
        unsafe { VmFd::set_device_attr(&xics, &attr) }?;
    }
    Ok(xics)
}

/// Connects `vcpu` to the XICS as interrupt server `server`.
pub fn connect_xics(vcpu: &VcpuFd, xics: &File, server: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    vcpu.enable_cap(&EnableCap {
        cap: CAP_IRQ_XICS,
        args: [xics.as_raw_fd() as u64, u64::from(server), 0, 0],
        ..Default::default()
    })
}

/// Turns on PAPR mode for `vcpu` (hypercalls from the guest kernel, not a bare-metal
/// guest).
pub fn enable_papr(vcpu: &VcpuFd) -> io::Result<()> {
    vcpu.enable_cap(&EnableCap {
        cap: CAP_PPC_PAPR,
        ..Default::default()
    })
}

/// Asks KVM to pass hypercall `hcall` to userspace (`enable` false) or handle it in the
/// kernel (`enable` true).
pub fn enable_hcall(vm: &VmFd, hcall: u64, enable: bool) -> io::Result<()> {
    vm.enable_cap(&EnableCap {
        cap: CAP_PPC_ENABLE_HCALL,
        args: [hcall, u64::from(enable), 0, 0],
        ..Default::default()
    })
}

/// A `KVM_EXIT_PAPR_HCALL`: the hcall number (r3) and arguments (r4..r12). On the next
/// `KVM_RUN`, KVM loads r3 from `ret` and r4..r12 from `args`, so outputs go in `args`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PaprHcall {
    /// hcall number.
    pub nr: u64,
    /// r4..r12.
    pub args: [u64; 9],
}

impl PaprHcall {
    /// Decodes `struct { __u64 nr; __u64 ret; __u64 args[9]; } papr_hcall` (host order).
    pub fn decode(union: &[u8]) -> Option<Self> {
        let word = |i: usize| {
            union
                .get(i * 8..i * 8 + 8)
                .map(|b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))
        };
        let mut args = [0u64; 9];
        for (i, a) in args.iter_mut().enumerate() {
            *a = word(2 + i)?;
        }
        Some(Self { nr: word(0)?, args })
    }

    /// Stores the return code and output registers for the next `KVM_RUN`.
    pub fn complete(union: &mut [u8], ret: i64, args: &[u64; 9]) {
        if union.len() < 88 {
            return;
        }
        union[8..16].copy_from_slice(&ret.to_ne_bytes());
        for (i, a) in args.iter().enumerate() {
            union[16 + i * 8..24 + i * 8].copy_from_slice(&a.to_ne_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_sizes_and_numbers_are_the_powerpc_uapi() {
        // 17 u64 (pc..sprg7) + 32 GPRs.
        assert_eq!(std::mem::size_of::<Regs>(), 392);
        assert_eq!(KVM_GET_REGS, 0x4188_ae81);
        assert_eq!(KVM_SET_REGS, 0x8188_ae82);
        assert_eq!(KVM_PPC_CONFIGURE_V3_MMU, 0x8010_aeaf);
        assert_eq!(KVM_IRQ_LINE, 0x8008_ae61);
        assert_eq!(REG_LPCR_64, 0x1030_0000_0000_00b5);
        assert_eq!(REG_ARCH_COMPAT, 0x1020_0000_0000_00b7);
    }

    #[test]
    fn papr_hcall_round_trip() {
        // nr at 0, ret at 8, args[0..9] at 16..88.
        let mut u = [0u8; 256];
        u[0..8].copy_from_slice(&0x58u64.to_ne_bytes());
        u[16..24].copy_from_slice(&0x3000_0000u64.to_ne_bytes());
        u[24..32].copy_from_slice(&2u64.to_ne_bytes());
        let h = PaprHcall::decode(&u).unwrap();
        assert_eq!(h.nr, 0x58);
        assert_eq!(h.args[0], 0x3000_0000);
        assert_eq!(h.args[1], 2);
        let mut out = [0u64; 9];
        out[0] = 7;
        PaprHcall::complete(&mut u, -4, &out);
        assert_eq!(i64::from_ne_bytes(u[8..16].try_into().unwrap()), -4);
        assert_eq!(u64::from_ne_bytes(u[16..24].try_into().unwrap()), 7);
    }
}
