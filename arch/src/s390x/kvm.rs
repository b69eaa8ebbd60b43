//! The KVM-on-Z side of an s390x guest (arch/s390/include/uapi/asm/kvm.h and the s390
//! parts of linux/kvm.h): general registers, the initial CPU reset and PSW, floating
//! interrupts (service signal for SCLP, I/O interrupts for channel I/O), the PSW in
//! `kvm_run`, and the `KVM_EXIT_S390_SIEIC` intercept with its instruction decoding.
//!
//! The structures, numbers and decoding are pure and tested on any host; the calls need
//! an IBM Z / LinuxONE host with the SIE facility.

use std::io;

use crate::kvm::fd::{read_ioctl, value_ioctl, write_ioctl};
use crate::kvm::{EnableCap, Encoding, VcpuFd, VmFd};

const G: Encoding = Encoding::Generic;

/// The machine type of a normal (not user-controlled) s390 VM.
pub const VM_TYPE: u64 = 0;
/// `KVM_CAP_S390_CSS_SUPPORT`: channel I/O instructions are intercepted to userspace.
pub const CAP_S390_CSS_SUPPORT: u32 = 85;
/// `KVM_CAP_S390_IRQCHIP`.
pub const CAP_S390_IRQCHIP: u32 = 99;
/// `KVM_S390_INT_SERVICE`: the service-signal external interruption (SCLP done).
pub const INT_SERVICE: u32 = 0xffff_2401;
/// `KVM_S390_PROGRAM_INT`: a program interruption, its code in `parm`.
pub const INT_PROGRAM: u32 = 0xfffe_0001;
/// Offset of `psw_mask` in `struct kvm_run` on s390 (`psw_addr` follows).
pub const RUN_PSW_MASK_OFFSET: usize = 32;

/// `KVM_S390_INT_IO(ai, cssid, ssid, schid)`: the interrupt type of an I/O interruption.
pub const fn int_io(adapter: bool, cssid: u32, ssid: u32, schid: u32) -> u32 {
    schid | (ssid << 16) | (cssid << 18) | ((adapter as u32) << 26)
}

/// `struct kvm_regs` on s390: the 16 general registers.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    /// r0..r15.
    pub gprs: [u64; 16],
}

/// `struct kvm_s390_psw`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct Psw {
    mask: u64,
    addr: u64,
}

/// `struct kvm_s390_interrupt`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct Interrupt {
    ty: u32,
    parm: u32,
    parm64: u64,
}

/// `struct kvm_s390_mem_op` (the union is the `ar`/`key`/`old_addr` variant).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct MemOp {
    gaddr: u64,
    flags: u64,
    size: u32,
    op: u32,
    buf: u64,
    ar: u8,
    key: u8,
    pad1: [u8; 6],
    old_addr: u64,
    reserved: [u8; 16],
}

const MEMOP_LOGICAL_READ: u32 = 0;
const MEMOP_LOGICAL_WRITE: u32 = 1;
const MEMOP_F_INJECT_EXCEPTION: u64 = 1 << 1;

const KVM_GET_REGS: u64 = G.ior::<Regs>(0x81);
const KVM_S390_MEM_OP: u64 = G.iow::<MemOp>(0xb1);
const KVM_SET_REGS: u64 = G.iow::<Regs>(0x82);
const KVM_S390_INTERRUPT: u64 = G.iow::<Interrupt>(0x94);
const KVM_S390_SET_INITIAL_PSW: u64 = G.iow::<Psw>(0x96);
const KVM_S390_INITIAL_RESET: u64 = G.io(0x97);

/// Reads the general registers.
pub fn get_regs(vcpu: &VcpuFd) -> io::Result<Regs> {
    let mut regs = Regs::default();
    // SAFETY: KVM_GET_REGS on s390 writes one struct kvm_regs, which `Regs` mirrors.
    unsafe { read_ioctl(vcpu, KVM_GET_REGS, &mut regs) }?;
    Ok(regs)
}

/// Writes the general registers.
pub fn set_regs(vcpu: &VcpuFd, regs: &Regs) -> io::Result<()> {
    // SAFETY: KVM_SET_REGS on s390 reads one struct kvm_regs, which `Regs` mirrors.
    unsafe { write_ioctl(vcpu, KVM_SET_REGS, regs) }.map(drop)
}

/// The initial CPU reset (Principles of Operation "CPU Reset" plus initial values).
pub fn initial_reset(vcpu: &VcpuFd) -> io::Result<()> {
    // SAFETY: KVM_S390_INITIAL_RESET takes no argument.
    unsafe { value_ioctl(vcpu, KVM_S390_INITIAL_RESET, 0) }.map(drop)
}

/// Sets the PSW a stopped vCPU starts with.
pub fn set_initial_psw(vcpu: &VcpuFd, mask: u64, addr: u64) -> io::Result<()> {
    // SAFETY: KVM_S390_SET_INITIAL_PSW reads one struct kvm_s390_psw.
    unsafe { write_ioctl(vcpu, KVM_S390_SET_INITIAL_PSW, &Psw { mask, addr }) }.map(drop)
}

/// Injects a floating interrupt: `ty` [`INT_SERVICE`] with the SCCB address in `parm`,
/// or an [`int_io`] type with the subsystem ID word in `parm` and
/// `(interruption parameter << 32) | interruption identification word` in `parm64`.
pub fn inject(vm: &VmFd, ty: u32, parm: u32, parm64: u64) -> io::Result<()> {
    let irq = Interrupt { ty, parm, parm64 };
    // SAFETY: KVM_S390_INTERRUPT on a VM fd reads one struct kvm_s390_interrupt.
    unsafe { write_ioctl(vm, KVM_S390_INTERRUPT, &irq) }.map(drop)
}

/// The I/O-interruption-identification word: the ISC in bits 2-4, bit 0 for an adapter
/// interruption.
pub const fn io_interruption_word(isc: u8, adapter: bool) -> u32 {
    ((adapter as u32) << 31) | (((isc & 7) as u32) << 27)
}

/// Injects a program interruption with `code` on `vcpu`.
pub fn inject_program(vcpu: &VcpuFd, code: u16) -> io::Result<()> {
    let irq = Interrupt {
        ty: INT_PROGRAM,
        parm: u32::from(code),
        parm64: 0,
    };
    // SAFETY: KVM_S390_INTERRUPT on a vCPU fd reads one struct kvm_s390_interrupt.
    unsafe { write_ioctl(vcpu, KVM_S390_INTERRUPT, &irq) }.map(drop)
}

/// What a logical storage access by a vCPU did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// The bytes were transferred.
    Done,
    /// The access raised this program exception, which KVM has injected.
    Exception(u32),
}

fn mem_op(vcpu: &VcpuFd, op: u32, addr: u64, buf: *mut u8, len: usize) -> io::Result<Access> {
    let size = u32::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let m = MemOp {
        gaddr: addr,
        flags: MEMOP_F_INJECT_EXCEPTION,
        size,
        op,
        buf: buf as u64,
        ..MemOp::default()
    };
    // SAFETY: KVM_S390_MEM_OP reads one struct kvm_s390_mem_op and transfers `size`
    // bytes to or from `buf`, which the callers pass as a live buffer of `len` bytes
    // (read-only for a write to the guest).
    let rc = unsafe { write_ioctl(vcpu, KVM_S390_MEM_OP, &m) }?;
    Ok(match rc {
        0 => Access::Done,
        code => Access::Exception(code as u32),
    })
}

/// Reads guest storage at logical address `addr` as `vcpu` sees it (DAT, prefixing,
/// access register 0); an access exception is injected into the vCPU.
pub fn read_logical(vcpu: &VcpuFd, addr: u64, buf: &mut [u8]) -> io::Result<Access> {
    mem_op(vcpu, MEMOP_LOGICAL_READ, addr, buf.as_mut_ptr(), buf.len())
}

/// Writes guest storage at logical address `addr` as `vcpu` sees it.
pub fn write_logical(vcpu: &VcpuFd, addr: u64, buf: &[u8]) -> io::Result<Access> {
    // KVM only reads from `buf` for a write.
    mem_op(
        vcpu,
        MEMOP_LOGICAL_WRITE,
        addr,
        buf.as_ptr().cast_mut(),
        buf.len(),
    )
}

/// `KVM_EXIT_S390_TSCH`: TEST SUBCHANNEL, with the I/O interruption KVM dequeued for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tsch {
    /// Subchannel-identification halfword of the dequeued interruption.
    pub subchannel_id: u16,
    /// Subchannel number of the dequeued interruption.
    pub subchannel_nr: u16,
    /// Its interruption parameter.
    pub io_int_parm: u32,
    /// Its interruption-identification word.
    pub io_int_word: u32,
    /// Instruction bytes 2-5 (the operand's base and displacement).
    pub ipb: u32,
    /// Whether KVM dequeued an interruption (to re-inject if TSCH does not complete).
    pub dequeued: bool,
}

impl Tsch {
    /// Decodes `struct kvm_s390_tsch` (host order).
    pub fn decode(union: &[u8]) -> Option<Self> {
        let u16_at = |at: usize| Some(u16::from_ne_bytes(union.get(at..at + 2)?.try_into().ok()?));
        let u32_at = |at: usize| Some(u32::from_ne_bytes(union.get(at..at + 4)?.try_into().ok()?));
        Some(Self {
            subchannel_id: u16_at(0)?,
            subchannel_nr: u16_at(2)?,
            io_int_parm: u32_at(4)?,
            io_int_word: u32_at(8)?,
            ipb: u32_at(12)?,
            dequeued: *union.get(16)? != 0,
        })
    }

    /// The operand address `D2(B2)` of the TEST SUBCHANNEL.
    pub fn operand(&self, gprs: &[u64; 16]) -> u64 {
        effective_address(
            gprs,
            (self.ipb >> 28) as u8,
            ((self.ipb >> 16) & 0xfff) as u16,
        )
    }
}

/// Has KVM pass channel I/O instructions to userspace.
pub fn enable_css_support(vm: &VmFd) -> io::Result<()> {
    vm.enable_cap(&EnableCap {
        cap: CAP_S390_CSS_SUPPORT,
        ..Default::default()
    })
}

/// The PSW KVM keeps in `kvm_run` (read after an exit, written back before the next
/// `KVM_RUN`).
pub fn run_psw(page: &[u8]) -> Option<(u64, u64)> {
    let at = RUN_PSW_MASK_OFFSET;
    let mask = u64::from_ne_bytes(page.get(at..at + 8)?.try_into().ok()?);
    let addr = u64::from_ne_bytes(page.get(at + 8..at + 16)?.try_into().ok()?);
    Some((mask, addr))
}

/// Sets the condition code (PSW bits 18-19) of the PSW in `kvm_run`.
pub fn set_condition_code(page: &mut [u8], cc: u8) {
    let at = RUN_PSW_MASK_OFFSET;
    if let Some(b) = page.get_mut(at..at + 8) {
        let mask = u64::from_ne_bytes((&*b).try_into().expect("8 bytes"));
        let mask = (mask & !(3 << 44)) | (u64::from(cc & 3) << 44);
        b.copy_from_slice(&mask.to_ne_bytes());
    }
}

/// A `KVM_EXIT_S390_SIEIC`: the SIE interception code and the intercepted instruction's
/// parameters (`ipa`: first halfword, `ipb`: the next word).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sieic {
    /// Interception code (4: instruction, 8: program interruption, ...).
    pub icptcode: u8,
    /// Instruction bytes 0-1.
    pub ipa: u16,
    /// Instruction bytes 2-5.
    pub ipb: u32,
}

/// Interception code of an intercepted instruction.
pub const ICPT_INSTRUCTION: u8 = 0x04;

impl Sieic {
    /// Decodes `struct { __u8 icptcode; __u16 ipa; __u32 ipb; } s390_sieic` (host order,
    /// C alignment: ipa at 2, ipb at 4).
    pub fn decode(union: &[u8]) -> Option<Self> {
        Some(Self {
            icptcode: *union.first()?,
            ipa: u16::from_ne_bytes(union.get(2..4)?.try_into().ok()?),
            ipb: u32::from_ne_bytes(union.get(4..8)?.try_into().ok()?),
        })
    }

    /// What the intercepted instruction asks for.
    pub fn instruction(&self) -> Instruction {
        if self.icptcode != ICPT_INSTRUCTION {
            return Instruction::Other;
        }
        let op = (self.ipa >> 8) as u8;
        let op2 = self.ipa as u8;
        let b2 = ((self.ipb >> 28) & 0xf) as u8;
        let d2 = ((self.ipb >> 16) & 0xfff) as u16;
        match (op, op2) {
            // SERVICE CALL, RRE: r1 (command word) and r2 (SCCB address) in ipb.
            (0xb2, 0x20) => Instruction::ServiceCall {
                r1: ((self.ipb >> 20) & 0xf) as u8,
                r2: ((self.ipb >> 16) & 0xf) as u8,
            },
            // DIAGNOSE, RS: r1, r3 in ipa; the code is base + displacement.
            (0x83, _) => Instruction::Diagnose {
                r1: op2 >> 4,
                r3: op2 & 0xf,
                b2,
                d2,
            },
            // Channel-subsystem instructions, S format: operand at D2(B2), subsystem ID
            // in r1.
            (0xb2, 0x30..=0x3c) | (0xb2, 0x76) => Instruction::ChannelIo { op: op2, b2, d2 },
            // CHANNEL SUBSYSTEM CALL, RRE: the request block's address in gpr r1.
            (0xb2, 0x5f) => Instruction::Chsc {
                r1: ((self.ipb >> 20) & 0xf) as u8,
            },
            _ => Instruction::Other,
        }
    }
}

/// The instructions a VMM handles from `KVM_EXIT_S390_SIEIC`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Instruction {
    /// SERVICE CALL (SCLP): command word in gpr `r1`, SCCB address in gpr `r2`.
    ServiceCall {
        /// Register with the SCLP command word.
        r1: u8,
        /// Register with the SCCB address.
        r2: u8,
    },
    /// DIAGNOSE with code `gpr[b2] + d2` (0x500: KVM hypercall, virtio-ccw notify).
    Diagnose {
        /// First register operand.
        r1: u8,
        /// Third register operand.
        r3: u8,
        /// Base register (0: none).
        b2: u8,
        /// Displacement.
        d2: u16,
    },
    /// A channel-subsystem instruction (second opcode byte `op`: 0x33 START SUBCHANNEL,
    /// 0x34 STORE SUBCHANNEL, 0x35 TEST SUBCHANNEL, ...) with its operand at `D2(B2)`.
    ChannelIo {
        /// Second opcode byte.
        op: u8,
        /// Base register (0: none).
        b2: u8,
        /// Displacement.
        d2: u16,
    },
    /// CHANNEL SUBSYSTEM CALL with its request block at the address in gpr `r1`.
    Chsc {
        /// Register with the request block's address.
        r1: u8,
    },
    /// Anything else.
    Other,
}

/// DIAGNOSE 0x500: the KVM hypercall (subcode in gpr 1).
pub const DIAG_KVM_HYPERCALL: u16 = 0x500;
/// Hypercall subcode 3: virtio-ccw notification (gpr 2: subchannel ID, gpr 3: queue).
pub const VIRTIO_CCW_NOTIFY: u64 = 3;

/// The effective address `D2(B2)`: base register contents (none when B2 is 0) plus
/// the displacement.
pub fn effective_address(gprs: &[u64; 16], b2: u8, d2: u16) -> u64 {
    let base = if b2 == 0 {
        0
    } else {
        gprs[usize::from(b2 & 0xf)]
    };
    base.wrapping_add(u64::from(d2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_the_s390_uapi() {
        assert_eq!(std::mem::size_of::<Regs>(), 128);
        assert_eq!(KVM_GET_REGS, 0x8080_ae81);
        assert_eq!(KVM_S390_INTERRUPT, 0x4010_ae94);
        assert_eq!(KVM_S390_SET_INITIAL_PSW, 0x4010_ae96);
        assert_eq!(KVM_S390_INITIAL_RESET, 0xae97);
        // Subchannel 2 of subchannel set 0, CSS 0, not an adapter interrupt.
        assert_eq!(int_io(false, 0, 0, 2), 2);
        assert_eq!(int_io(true, 0, 0, 0), 0x0400_0000);
    }

    #[test]
    fn mem_op_tsch_and_io_words() {
        // _IOW(KVMIO, 0xb1, struct kvm_s390_mem_op): 64 bytes.
        assert_eq!(std::mem::size_of::<MemOp>(), 64);
        assert_eq!(KVM_S390_MEM_OP, 0x4040_aeb1);
        // ISC 3: bits 2-4 of the word; an adapter interruption also has bit 0.
        assert_eq!(io_interruption_word(3, false), 0x1800_0000);
        assert_eq!(io_interruption_word(7, true), 0xb800_0000);
        let mut u = [0u8; 256];
        u[0..2].copy_from_slice(&0x0001u16.to_ne_bytes());
        u[2..4].copy_from_slice(&0x0002u16.to_ne_bytes());
        u[4..8].copy_from_slice(&0xcafeu32.to_ne_bytes());
        u[8..12].copy_from_slice(&0x1800_0000u32.to_ne_bytes());
        // `tsch 0x40(%r4)` is B235 4040: ipb 0x4040_0000.
        u[12..16].copy_from_slice(&0x4040_0000u32.to_ne_bytes());
        u[16] = 1;
        let t = Tsch::decode(&u).unwrap();
        assert_eq!(
            (t.subchannel_id, t.subchannel_nr, t.io_int_parm),
            (1, 2, 0xcafe)
        );
        assert!(t.dequeued);
        let mut gprs = [0u64; 16];
        gprs[4] = 0x8000;
        assert_eq!(t.operand(&gprs), 0x8040);
        // `chsc %r2` is B25F 0020.
        let c = Sieic {
            icptcode: 4,
            ipa: 0xb25f,
            ipb: 0x0020_0000,
        };
        assert_eq!(c.instruction(), Instruction::Chsc { r1: 2 });
    }

    #[test]
    fn service_call_decodes_its_registers() {
        // `servc %r2,%r3` is B220 0023: ipa 0xb220, ipb 0x0023_0000.
        let mut u = [0u8; 256];
        u[0] = 4;
        u[2..4].copy_from_slice(&0xb220u16.to_ne_bytes());
        u[4..8].copy_from_slice(&0x0023_0000u32.to_ne_bytes());
        let s = Sieic::decode(&u).unwrap();
        assert_eq!(s.instruction(), Instruction::ServiceCall { r1: 2, r2: 3 });
    }

    #[test]
    fn diagnose_and_channel_io_decode() {
        // `diag %r2,%r4,0x500` is 83 24 0500: ipa 0x8324, ipb 0x0500_0000.
        let d = Sieic {
            icptcode: 4,
            ipa: 0x8324,
            ipb: 0x0500_0000,
        };
        assert_eq!(
            d.instruction(),
            Instruction::Diagnose {
                r1: 2,
                r3: 4,
                b2: 0,
                d2: 0x500
            }
        );
        // `ssch 0(%r5)` is B233 5000.
        let s = Sieic {
            icptcode: 4,
            ipa: 0xb233,
            ipb: 0x5000_0000,
        };
        assert_eq!(
            s.instruction(),
            Instruction::ChannelIo {
                op: 0x33,
                b2: 5,
                d2: 0
            }
        );
        let mut gprs = [0u64; 16];
        gprs[5] = 0x1000;
        assert_eq!(effective_address(&gprs, 5, 0x20), 0x1020);
        assert_eq!(effective_address(&gprs, 0, 0x500), 0x500);
        assert_eq!(
            Sieic {
                icptcode: 8,
                ipa: 0xb220,
                ipb: 0
            }
            .instruction(),
            Instruction::Other
        );
    }

    #[test]
    fn condition_code_lands_in_psw_bits_18_and_19() {
        let mut page = vec![0u8; 64];
        page[32..40].copy_from_slice(&0x0000_0001_8000_0000u64.to_ne_bytes());
        set_condition_code(&mut page, 3);
        assert_eq!(run_psw(&page).unwrap().0, 0x0000_3001_8000_0000);
        set_condition_code(&mut page, 1);
        assert_eq!(run_psw(&page).unwrap().0, 0x0000_1001_8000_0000);
    }
}
