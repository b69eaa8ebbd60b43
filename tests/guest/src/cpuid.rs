//! CPUID as this vCPU sees it: vendor, hypervisor signature, raw feature leaves, named feature
//! flags and the extended topology (leaf 0xB, decoded by `raw-cpuid`).
//!
//! Flag names are QEMU's and libvirt's (the names KubeVirt's `domain.cpu.features` uses), for
//! leaves 1, 7.0 and 0x80000001.

use core::fmt;

/// A feature register: `(leaf, subleaf, register index 0..4 = eax, ebx, ecx, edx)`.
type Reg = (u32, u32, usize);

const L1_ECX: Reg = (1, 0, 2);
const L1_EDX: Reg = (1, 0, 3);
const L7_EBX: Reg = (7, 0, 1);
const L7_ECX: Reg = (7, 0, 2);
const L7_EDX: Reg = (7, 0, 3);
const E1_ECX: Reg = (0x8000_0001, 0, 2);
const E1_EDX: Reg = (0x8000_0001, 0, 3);

/// `(name, register, bit)` for every flag the guest names.
pub const FLAGS: &[(&str, Reg, u8)] = &[
    ("fpu", L1_EDX, 0),
    ("vme", L1_EDX, 1),
    ("de", L1_EDX, 2),
    ("pse", L1_EDX, 3),
    ("tsc", L1_EDX, 4),
    ("msr", L1_EDX, 5),
    ("pae", L1_EDX, 6),
    ("mce", L1_EDX, 7),
    ("cx8", L1_EDX, 8),
    ("apic", L1_EDX, 9),
    ("sep", L1_EDX, 11),
    ("mtrr", L1_EDX, 12),
    ("pge", L1_EDX, 13),
    ("mca", L1_EDX, 14),
    ("cmov", L1_EDX, 15),
    ("pat", L1_EDX, 16),
    ("pse36", L1_EDX, 17),
    ("pn", L1_EDX, 18),
    ("clflush", L1_EDX, 19),
    ("ds", L1_EDX, 21),
    ("acpi", L1_EDX, 22),
    ("mmx", L1_EDX, 23),
    ("fxsr", L1_EDX, 24),
    ("sse", L1_EDX, 25),
    ("sse2", L1_EDX, 26),
    ("ss", L1_EDX, 27),
    ("ht", L1_EDX, 28),
    ("tm", L1_EDX, 29),
    ("ia64", L1_EDX, 30),
    ("pbe", L1_EDX, 31),
    ("pni", L1_ECX, 0),
    ("pclmulqdq", L1_ECX, 1),
    ("dtes64", L1_ECX, 2),
    ("monitor", L1_ECX, 3),
    ("ds-cpl", L1_ECX, 4),
    ("vmx", L1_ECX, 5),
    ("smx", L1_ECX, 6),
    ("est", L1_ECX, 7),
    ("tm2", L1_ECX, 8),
    ("ssse3", L1_ECX, 9),
    ("cid", L1_ECX, 10),
    ("fma", L1_ECX, 12),
    ("cx16", L1_ECX, 13),
    ("xtpr", L1_ECX, 14),
    ("pdcm", L1_ECX, 15),
    ("pcid", L1_ECX, 17),
    ("dca", L1_ECX, 18),
    ("sse4.1", L1_ECX, 19),
    ("sse4.2", L1_ECX, 20),
    ("x2apic", L1_ECX, 21),
    ("movbe", L1_ECX, 22),
    ("popcnt", L1_ECX, 23),
    ("tsc-deadline", L1_ECX, 24),
    ("aes", L1_ECX, 25),
    ("xsave", L1_ECX, 26),
    ("osxsave", L1_ECX, 27),
    ("avx", L1_ECX, 28),
    ("f16c", L1_ECX, 29),
    ("rdrand", L1_ECX, 30),
    ("hypervisor", L1_ECX, 31),
    ("fsgsbase", L7_EBX, 0),
    ("tsc_adjust", L7_EBX, 1),
    ("sgx", L7_EBX, 2),
    ("bmi1", L7_EBX, 3),
    ("hle", L7_EBX, 4),
    ("avx2", L7_EBX, 5),
    ("smep", L7_EBX, 7),
    ("bmi2", L7_EBX, 8),
    ("erms", L7_EBX, 9),
    ("invpcid", L7_EBX, 10),
    ("rtm", L7_EBX, 11),
    ("mpx", L7_EBX, 14),
    ("avx512f", L7_EBX, 16),
    ("avx512dq", L7_EBX, 17),
    ("rdseed", L7_EBX, 18),
    ("adx", L7_EBX, 19),
    ("smap", L7_EBX, 20),
    ("avx512ifma", L7_EBX, 21),
    ("clflushopt", L7_EBX, 23),
    ("clwb", L7_EBX, 24),
    ("intel-pt", L7_EBX, 25),
    ("avx512pf", L7_EBX, 26),
    ("avx512er", L7_EBX, 27),
    ("avx512cd", L7_EBX, 28),
    ("sha-ni", L7_EBX, 29),
    ("avx512bw", L7_EBX, 30),
    ("avx512vl", L7_EBX, 31),
    ("avx512vbmi", L7_ECX, 1),
    ("umip", L7_ECX, 2),
    ("pku", L7_ECX, 3),
    ("ospke", L7_ECX, 4),
    ("waitpkg", L7_ECX, 5),
    ("avx512vbmi2", L7_ECX, 6),
    ("gfni", L7_ECX, 8),
    ("vaes", L7_ECX, 9),
    ("vpclmulqdq", L7_ECX, 10),
    ("avx512vnni", L7_ECX, 11),
    ("avx512bitalg", L7_ECX, 12),
    ("avx512-vpopcntdq", L7_ECX, 14),
    ("la57", L7_ECX, 16),
    ("rdpid", L7_ECX, 22),
    ("cldemote", L7_ECX, 25),
    ("movdiri", L7_ECX, 27),
    ("movdir64b", L7_ECX, 28),
    ("avx512-4vnniw", L7_EDX, 2),
    ("avx512-4fmaps", L7_EDX, 3),
    ("fsrm", L7_EDX, 4),
    ("avx512-vp2intersect", L7_EDX, 8),
    ("md-clear", L7_EDX, 10),
    ("serialize", L7_EDX, 14),
    ("tsx-ldtrk", L7_EDX, 16),
    ("amx-bf16", L7_EDX, 22),
    ("avx512-fp16", L7_EDX, 23),
    ("amx-tile", L7_EDX, 24),
    ("amx-int8", L7_EDX, 25),
    ("spec-ctrl", L7_EDX, 26),
    ("stibp", L7_EDX, 27),
    ("flush-l1d", L7_EDX, 28),
    ("arch-capabilities", L7_EDX, 29),
    ("core-capability", L7_EDX, 30),
    ("ssbd", L7_EDX, 31),
    ("lahf_lm", E1_ECX, 0),
    ("cmp_legacy", E1_ECX, 1),
    ("svm", E1_ECX, 2),
    ("extapic", E1_ECX, 3),
    ("cr8legacy", E1_ECX, 4),
    ("abm", E1_ECX, 5),
    ("sse4a", E1_ECX, 6),
    ("misalignsse", E1_ECX, 7),
    ("3dnowprefetch", E1_ECX, 8),
    ("osvw", E1_ECX, 9),
    ("ibs", E1_ECX, 10),
    ("xop", E1_ECX, 11),
    ("skinit", E1_ECX, 12),
    ("wdt", E1_ECX, 13),
    ("lwp", E1_ECX, 15),
    ("fma4", E1_ECX, 16),
    ("tce", E1_ECX, 17),
    ("nodeid_msr", E1_ECX, 19),
    ("tbm", E1_ECX, 21),
    ("topoext", E1_ECX, 22),
    ("perfctr_core", E1_ECX, 23),
    ("perfctr_nb", E1_ECX, 24),
    ("syscall", E1_EDX, 11),
    ("nx", E1_EDX, 20),
    ("mmxext", E1_EDX, 22),
    ("fxsr_opt", E1_EDX, 25),
    ("pdpe1gb", E1_EDX, 26),
    ("rdtscp", E1_EDX, 27),
    ("lm", E1_EDX, 29),
    ("3dnowext", E1_EDX, 30),
    ("3dnow", E1_EDX, 31),
];

/// The feature registers the flag table refers to, read once.
#[derive(Clone, Copy, Debug, Default)]
pub struct FeatureRegs {
    pub leaf1: [u32; 4],
    pub leaf7: [u32; 4],
    pub ext1: [u32; 4],
}

impl FeatureRegs {
    fn reg(&self, (leaf, _, idx): Reg) -> u32 {
        match leaf {
            1 => self.leaf1[idx],
            7 => self.leaf7[idx],
            _ => self.ext1[idx],
        }
    }

    /// Whether the flag named `name` is set (`None` for a name not in [`FLAGS`]).
    pub fn has(&self, name: &str) -> Option<bool> {
        FLAGS
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|&(_, r, bit)| self.reg(r) & (1 << bit) != 0)
    }

    /// Displays the set flags' names separated by spaces.
    pub fn names(&self) -> FlagNames<'_> {
        FlagNames(self)
    }
}

/// See [`FeatureRegs::names`].
pub struct FlagNames<'a>(&'a FeatureRegs);

impl fmt::Display for FlagNames<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for &(name, r, bit) in FLAGS {
            if self.0.reg(r) & (1 << bit) != 0 {
                if !first {
                    f.write_str(" ")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// Raw CPUID: `[eax, ebx, ecx, edx]` of `leaf`/`subleaf`.
#[cfg(not(test))]
pub fn raw(leaf: u32, subleaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// Reads the registers [`FLAGS`] names.
#[cfg(not(test))]
pub fn feature_regs() -> FeatureRegs {
    let max = raw(0, 0)[0];
    let max_ext = raw(0x8000_0000, 0)[0];
    FeatureRegs {
        leaf1: raw(1, 0),
        leaf7: if max >= 7 { raw(7, 0) } else { [0; 4] },
        ext1: if max_ext >= 0x8000_0001 {
            raw(0x8000_0001, 0)
        } else {
            [0; 4]
        },
    }
}

/// The hypervisor signature of leaf 0x40000000 (12 bytes), if the hypervisor bit is set.
#[cfg(not(test))]
pub fn hypervisor_signature() -> Option<([u8; 12], u32)> {
    if raw(1, 0)[2] & (1 << 31) == 0 {
        return None;
    }
    let r = raw(0x4000_0000, 0);
    let mut sig = [0u8; 12];
    sig[0..4].copy_from_slice(&r[1].to_le_bytes());
    sig[4..8].copy_from_slice(&r[2].to_le_bytes());
    sig[8..12].copy_from_slice(&r[3].to_le_bytes());
    Some((sig, r[0]))
}

/// Whether the hypervisor is KVM and advertises `feature` in leaf 0x40000001 EAX.
#[cfg(not(test))]
pub fn kvm_feature(feature: u32) -> bool {
    match hypervisor_signature() {
        Some((sig, max)) if &sig == b"KVMKVMKVM\0\0\0" && max >= 0x4000_0001 => {
            raw(0x4000_0001, 0)[0] & (1 << feature) != 0
        }
        _ => false,
    }
}

/// This CPU's initial APIC ID (leaf 1 EBX[31:24]) and, if leaf 0xB exists, its x2APIC ID.
#[cfg(not(test))]
pub fn apic_ids() -> (u32, Option<u32>) {
    let initial = raw(1, 0)[1] >> 24;
    let x2 = if raw(0, 0)[0] >= 0xb && raw(0xb, 0)[1] & 0xffff != 0 {
        Some(raw(0xb, 0)[3])
    } else {
        None
    };
    (initial, x2)
}

/// Prints the `cpuid.*` keys.
#[cfg(not(test))]
pub fn report() {
    use crate::bootinfo::Escaped;
    use crate::kv;
    use raw_cpuid::CpuId;

    let cpuid = CpuId::new();
    match cpuid.get_vendor_info() {
        Some(v) => kv!("cpuid.vendor", "{}", v.as_str()),
        None => kv!("cpuid.vendor", "none"),
    }
    let max = raw(0, 0)[0];
    kv!("cpuid.max_leaf", "{max:#x}");
    kv!("cpuid.max_ext_leaf", "{:#x}", raw(0x8000_0000, 0)[0]);
    let l1 = raw(1, 0);
    kv!(
        "cpuid.signature",
        "family={} model={} stepping={}",
        ((l1[0] >> 8) & 0xf) + ((l1[0] >> 20) & 0xff),
        ((l1[0] >> 4) & 0xf) | ((l1[0] >> 12) & 0xf0),
        l1[0] & 0xf
    );
    match hypervisor_signature() {
        Some((sig, max_hv)) => {
            let len = sig.iter().position(|&b| b == 0).unwrap_or(sig.len());
            kv!("cpuid.hypervisor", "{}", Escaped(&sig[..len]));
            kv!("cpuid.hypervisor.max_leaf", "{max_hv:#x}");
            if max_hv >= 0x4000_0001 {
                let r = raw(0x4000_0001, 0);
                kv!(
                    "cpuid.raw.40000001",
                    "{:#x},{:#x},{:#x},{:#x}",
                    r[0],
                    r[1],
                    r[2],
                    r[3]
                );
            }
        }
        None => kv!("cpuid.hypervisor", "none"),
    }
    let regs = feature_regs();
    for (key, r) in [
        ("cpuid.raw.1", regs.leaf1),
        ("cpuid.raw.7.0", regs.leaf7),
        ("cpuid.raw.80000001", regs.ext1),
    ] {
        kv!(key, "{:#x},{:#x},{:#x},{:#x}", r[0], r[1], r[2], r[3]);
    }
    kv!("cpuid.flags", "{}", regs.names());
    let (initial, x2) = apic_ids();
    kv!("cpuid.apic_id", "{initial}");
    match cpuid.get_extended_topology_info() {
        Some(levels) if x2.is_some() => {
            let mut line = crate::serial::Line::lock();
            use core::fmt::Write as _;
            let _ = line.write_str("cpuid.topology=");
            for (i, level) in levels.enumerate() {
                let kind = match level.level_type() {
                    raw_cpuid::TopologyType::SMT => "smt",
                    raw_cpuid::TopologyType::Core => "core",
                    _ => "other",
                };
                let _ = write!(
                    line,
                    "{}{}:{}:{}",
                    if i == 0 { "" } else { "," },
                    kind,
                    level.processors(),
                    level.shift_right_for_next_apic_id()
                );
            }
            let _ = writeln!(line, ";x2apic_id={}", x2.unwrap_or(0));
        }
        _ => kv!("cpuid.topology", "none"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_set_bits_in_table_order() {
        let regs = FeatureRegs {
            leaf1: [0, 0, 1 << 31, 1 | (1 << 4)],
            leaf7: [0, 1 << 5, 0, 1 << 10],
            ext1: [0, 0, 0, 1 << 29],
        };
        assert_eq!(
            std::format!("{}", regs.names()),
            "fpu tsc hypervisor avx2 md-clear lm"
        );
        assert_eq!(regs.has("avx2"), Some(true));
        assert_eq!(regs.has("x2apic"), Some(false));
        assert_eq!(regs.has("no-such-flag"), None);
    }

    #[test]
    fn flag_names_are_unique() {
        for (i, (a, _, _)) in FLAGS.iter().enumerate() {
            assert!(
                FLAGS[i + 1..].iter().all(|(b, _, _)| a != b),
                "duplicate {a}"
            );
        }
    }
}
