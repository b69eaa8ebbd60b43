//! vCPU set-up for x86_64: CPUID, boot MSRs, FPU, local APIC LINT pins, and for the boot
//! vCPU the entry state of the chosen protocol (segments, control registers, page
//! tables, RIP/RSP/RSI or EBX). Application processors are left in KVM's
//! wait-for-SIPI state and are started by the guest through the in-kernel LAPIC.
//!
//! The register values are plain data ([`boot_sregs_values`]); applying them is
//! KVM-facing and compiled on x86_64 hosts only.

use super::boot::BootEntry;
use super::gdt::{self, Segment};
use super::layout;

/// CR0.PE
pub const X86_CR0_PE: u64 = 0x1;
/// CR0.ET
pub const X86_CR0_ET: u64 = 0x10;
/// CR0.PG
pub const X86_CR0_PG: u64 = 0x8000_0000;
/// CR4.PAE
pub const X86_CR4_PAE: u64 = 0x20;
/// EFER.LME
pub const EFER_LME: u64 = 0x100;
/// EFER.LMA
pub const EFER_LMA: u64 = 0x400;

/// MSRs every vCPU starts with: `(index, value)`.
pub const BOOT_MSRS: &[(u32, u64)] = &[
    (0x174, 0),             // IA32_SYSENTER_CS
    (0x175, 0),             // IA32_SYSENTER_ESP
    (0x176, 0),             // IA32_SYSENTER_EIP
    (0xc000_0081, 0),       // STAR
    (0xc000_0082, 0),       // LSTAR
    (0xc000_0083, 0),       // CSTAR
    (0xc000_0084, 0),       // SYSCALL_MASK
    (0xc000_0102, 0),       // KERNEL_GS_BASE
    (0x1a0, 1),             // IA32_MISC_ENABLE: fast strings
    (0x2ff, (1 << 11) | 6), // MTRR default type: enabled, write-back
];

/// Segment and control register state the boot vCPU needs for `entry`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootSregs {
    /// Code segment.
    pub cs: Segment,
    /// Data segments (DS, ES, FS, GS, SS).
    pub data: Segment,
    /// Task register.
    pub tr: Segment,
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER.
    pub efer: u64,
}

/// The special registers for the boot vCPU: 32-bit flat protected mode for PVH, long
/// mode on the identity map for the 64-bit protocol.
pub fn boot_sregs_values(entry: &BootEntry) -> BootSregs {
    let pvh = matches!(entry, BootEntry::Pvh { .. });
    let table = gdt::boot_gdt(if pvh {
        gdt::CODE32_FLAGS
    } else {
        gdt::CODE64_FLAGS
    });
    let cs = gdt::segment_from_gdt(table[gdt::CODE_INDEX as usize], gdt::CODE_INDEX);
    let data = gdt::segment_from_gdt(table[gdt::DATA_INDEX as usize], gdt::DATA_INDEX);
    let tr = gdt::segment_from_gdt(table[gdt::TSS_INDEX as usize], gdt::TSS_INDEX);
    if pvh {
        BootSregs {
            cs,
            data,
            tr,
            cr0: X86_CR0_PE | X86_CR0_ET,
            cr3: 0,
            cr4: 0,
            efer: 0,
        }
    } else {
        BootSregs {
            cs,
            data,
            tr,
            cr0: X86_CR0_PE | X86_CR0_ET | X86_CR0_PG,
            cr3: layout::PML4_START,
            cr4: X86_CR4_PAE,
            efer: EFER_LME | EFER_LMA,
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub use self::kvm::*;

#[cfg(target_arch = "x86_64")]
mod kvm {
    use kvm_bindings::{
        kvm_cpuid_entry2, kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, CpuId, Msrs,
        KVM_MAX_CPUID_ENTRIES,
    };
    use kvm_ioctls::{Kvm, VcpuFd};

    use super::super::cpuid::CpuidEntry;
    use super::*;

    /// Errors configuring a vCPU.
    #[derive(Debug, thiserror::Error)]
    pub enum RegsError {
        /// Querying KVM's supported CPUID.
        #[error("Cannot get KVM's supported CPUID")]
        SupportedCpuid(#[source] kvm_ioctls::Error),
        /// Building the CPUID list.
        #[error("Cannot build the CPUID list")]
        CpuidList,
        /// A vCPU ioctl failed.
        #[error("Cannot set vCPU {what}")]
        Set {
            /// Which state.
            what: &'static str,
            /// The failure.
            #[source]
            source: kvm_ioctls::Error,
        },
        /// KVM accepted fewer MSRs than given.
        #[error("KVM set only {set} of {wanted} boot MSRs")]
        PartialMsrs {
            /// Accepted.
            set: usize,
            /// Given.
            wanted: usize,
        },
    }

    fn set(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> RegsError {
        move |source| RegsError::Set { what, source }
    }

    /// KVM's supported CPUID as plain entries.
    pub fn supported_cpuid(kvm: &Kvm) -> Result<Vec<CpuidEntry>, RegsError> {
        let cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(RegsError::SupportedCpuid)?;
        // KVM emulates the LAPIC's TSC-deadline mode but never reports it in
        // KVM_GET_SUPPORTED_CPUID; the VMM advertises it when the capability is there.
        // Without it Linux fails to verify its APIC timer and falls back to the PIT.
        let tsc_deadline = kvm.check_extension(kvm_ioctls::Cap::TscDeadlineTimer);
        Ok(cpuid
            .as_slice()
            .iter()
            .map(|e| {
                let mut ecx = e.ecx;
                if tsc_deadline && e.function == 1 {
                    ecx |= LEAF1_ECX_TSC_DEADLINE;
                }
                CpuidEntry {
                    function: e.function,
                    index: e.index,
                    flags: e.flags,
                    eax: e.eax,
                    ebx: e.ebx,
                    ecx,
                    edx: e.edx,
                }
            })
            .collect())
    }

    /// CPUID leaf 1 ECX bit 24: the LAPIC timer supports TSC-deadline mode.
    const LEAF1_ECX_TSC_DEADLINE: u32 = 1 << 24;

    fn kvm_segment(s: &Segment) -> kvm_segment {
        kvm_segment {
            base: s.base,
            limit: s.limit,
            selector: s.selector,
            type_: s.type_,
            present: s.present,
            dpl: s.dpl,
            db: s.db,
            s: s.s,
            l: s.l,
            g: s.g,
            avl: s.avl,
            unusable: s.unusable,
            padding: 0,
        }
    }

    /// Configures vCPU `vcpu` with its CPUID `entries`; `boot` is the entry state for
    /// the boot vCPU (`None` for application processors).
    pub fn configure_vcpu(
        vcpu: &VcpuFd,
        entries: &[CpuidEntry],
        boot: Option<&BootEntry>,
    ) -> Result<(), RegsError> {
        let kvm_entries: Vec<kvm_cpuid_entry2> = entries
            .iter()
            .map(|e| kvm_cpuid_entry2 {
                function: e.function,
                index: e.index,
                flags: e.flags,
                eax: e.eax,
                ebx: e.ebx,
                ecx: e.ecx,
                edx: e.edx,
                ..Default::default()
            })
            .collect();
        let cpuid = CpuId::from_entries(&kvm_entries).map_err(|_| RegsError::CpuidList)?;
        vcpu.set_cpuid2(&cpuid).map_err(set("CPUID"))?;

        let msr_entries: Vec<kvm_msr_entry> = BOOT_MSRS
            .iter()
            .map(|(index, data)| kvm_msr_entry {
                index: *index,
                data: *data,
                ..Default::default()
            })
            .collect();
        let msrs = Msrs::from_entries(&msr_entries).map_err(|_| RegsError::CpuidList)?;
        let n = vcpu.set_msrs(&msrs).map_err(set("MSRs"))?;
        if n != msr_entries.len() {
            return Err(RegsError::PartialMsrs {
                set: n,
                wanted: msr_entries.len(),
            });
        }

        let fpu = kvm_fpu {
            fcw: 0x37f,
            mxcsr: 0x1f80,
            ..Default::default()
        };
        vcpu.set_fpu(&fpu).map_err(set("FPU"))?;

        let mut lapic = vcpu.get_lapic().map_err(set("LAPIC (get)"))?;
        // The register page is `c_char`; view it as bytes.
        let mut page: Vec<u8> = lapic.regs.iter().map(|b| *b as u8).collect();
        super::super::interrupts::set_lint(&mut page);
        for (dst, src) in lapic.regs.iter_mut().zip(page) {
            *dst = src as _;
        }
        vcpu.set_lapic(&lapic).map_err(set("LAPIC"))?;

        if let Some(entry) = boot {
            let v = boot_sregs_values(entry);
            let mut sregs = vcpu.get_sregs().map_err(set("sregs (get)"))?;
            sregs.gdt.base = layout::BOOT_GDT_START;
            sregs.gdt.limit = 4 * 8 - 1;
            sregs.idt.base = layout::BOOT_IDT_START;
            sregs.idt.limit = 7;
            sregs.cs = kvm_segment(&v.cs);
            let data = kvm_segment(&v.data);
            (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
            sregs.tr = kvm_segment(&v.tr);
            sregs.cr0 = v.cr0;
            sregs.cr3 = v.cr3;
            sregs.cr4 = v.cr4;
            sregs.efer = v.efer;
            vcpu.set_sregs(&sregs).map_err(set("sregs"))?;

            let mut regs = kvm_regs {
                rflags: 0x2,
                ..Default::default()
            };
            match *entry {
                BootEntry::Pvh { entry, start_info } => {
                    regs.rip = entry;
                    regs.rbx = start_info;
                }
                BootEntry::Linux64 { entry, boot_params } => {
                    regs.rip = entry;
                    regs.rsp = layout::BOOT_STACK_POINTER;
                    regs.rbp = layout::BOOT_STACK_POINTER;
                    regs.rsi = boot_params;
                }
            }
            vcpu.set_regs(&regs).map_err(set("registers"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_mode_state() {
        let s = boot_sregs_values(&BootEntry::Linux64 {
            entry: 0x100_0000,
            boot_params: layout::ZERO_PAGE_START,
        });
        assert_eq!(s.cs.l, 1);
        assert_eq!(s.cs.selector, 8);
        assert_eq!(s.data.selector, 16);
        assert_ne!(s.cr0 & X86_CR0_PG, 0);
        assert_eq!(s.efer, EFER_LME | EFER_LMA);
        assert_eq!(s.cr3, layout::PML4_START);
    }

    #[test]
    fn pvh_state_is_flat_32_bit() {
        let s = boot_sregs_values(&BootEntry::Pvh {
            entry: 0x10_0000,
            start_info: layout::PVH_INFO_START,
        });
        assert_eq!((s.cs.l, s.cs.db), (0, 1));
        assert_eq!(s.cr0 & X86_CR0_PG, 0);
        assert_eq!(s.efer, 0);
        assert_eq!(s.cs.limit, 0xffff_ffff);
    }
}
