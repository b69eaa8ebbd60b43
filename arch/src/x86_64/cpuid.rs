//! CPUID the guest sees: KVM's supported set, shaped by KubeVirt's `domain.cpu` (model and
//! feature policies, once per VM) and then per vCPU (APIC ID, topology leaves, hypervisor
//! bit). Works on a plain entry list so every rule is unit-tested without KVM.

pub use crate::cpu::{CpuModel, CpuTemplate, FeaturePolicy, Topology};

/// KVM's flag for entries whose subleaf (`index`) matters.
pub const FLAG_SIGNIFICANT_INDEX: u32 = 1;

/// One CPUID leaf/subleaf as KVM lists it (`kvm_cpuid_entry2` without padding).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuidEntry {
    /// Leaf (EAX input).
    pub function: u32,
    /// Subleaf (ECX input).
    pub index: u32,
    /// KVM flags (`FLAG_SIGNIFICANT_INDEX`).
    pub flags: u32,
    /// Output EAX.
    pub eax: u32,
    /// Output EBX.
    pub ebx: u32,
    /// Output ECX.
    pub ecx: u32,
    /// Output EDX.
    pub edx: u32,
}

/// Output register of a CPUID leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reg {
    /// EAX.
    Eax,
    /// EBX.
    Ebx,
    /// ECX.
    Ecx,
    /// EDX.
    Edx,
}

impl CpuidEntry {
    fn reg_mut(&mut self, reg: Reg) -> &mut u32 {
        match reg {
            Reg::Eax => &mut self.eax,
            Reg::Ebx => &mut self.ebx,
            Reg::Ecx => &mut self.ecx,
            Reg::Edx => &mut self.edx,
        }
    }

    fn reg(&self, reg: Reg) -> u32 {
        match reg {
            Reg::Eax => self.eax,
            Reg::Ebx => self.ebx,
            Reg::Ecx => self.ecx,
            Reg::Edx => self.edx,
        }
    }
}

/// A CPU feature bit by its libvirt/KubeVirt name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Feature {
    /// libvirt name (`domain.cpu.features[].name`).
    pub name: &'static str,
    /// Leaf.
    pub function: u32,
    /// Subleaf.
    pub index: u32,
    /// Register.
    pub reg: Reg,
    /// Bit.
    pub bit: u8,
}

const fn f(name: &'static str, function: u32, index: u32, reg: Reg, bit: u8) -> Feature {
    Feature {
        name,
        function,
        index,
        reg,
        bit,
    }
}

/// The feature names KubeVirt users write (libvirt's x86 feature names).
pub const FEATURES: &[Feature] = &[
    f("fpu", 1, 0, Reg::Edx, 0),
    f("vme", 1, 0, Reg::Edx, 1),
    f("pse", 1, 0, Reg::Edx, 3),
    f("tsc", 1, 0, Reg::Edx, 4),
    f("msr", 1, 0, Reg::Edx, 5),
    f("pae", 1, 0, Reg::Edx, 6),
    f("cx8", 1, 0, Reg::Edx, 8),
    f("apic", 1, 0, Reg::Edx, 9),
    f("sep", 1, 0, Reg::Edx, 11),
    f("mtrr", 1, 0, Reg::Edx, 12),
    f("pge", 1, 0, Reg::Edx, 13),
    f("cmov", 1, 0, Reg::Edx, 15),
    f("pat", 1, 0, Reg::Edx, 16),
    f("clflush", 1, 0, Reg::Edx, 19),
    f("mmx", 1, 0, Reg::Edx, 23),
    f("fxsr", 1, 0, Reg::Edx, 24),
    f("sse", 1, 0, Reg::Edx, 25),
    f("sse2", 1, 0, Reg::Edx, 26),
    f("ss", 1, 0, Reg::Edx, 27),
    f("ht", 1, 0, Reg::Edx, 28),
    f("pni", 1, 0, Reg::Ecx, 0),
    f("pclmuldq", 1, 0, Reg::Ecx, 1),
    f("monitor", 1, 0, Reg::Ecx, 3),
    f("vmx", 1, 0, Reg::Ecx, 5),
    f("ssse3", 1, 0, Reg::Ecx, 9),
    f("fma", 1, 0, Reg::Ecx, 12),
    f("cx16", 1, 0, Reg::Ecx, 13),
    f("pdcm", 1, 0, Reg::Ecx, 15),
    f("pcid", 1, 0, Reg::Ecx, 17),
    f("sse4.1", 1, 0, Reg::Ecx, 19),
    f("sse4.2", 1, 0, Reg::Ecx, 20),
    f("x2apic", 1, 0, Reg::Ecx, 21),
    f("movbe", 1, 0, Reg::Ecx, 22),
    f("popcnt", 1, 0, Reg::Ecx, 23),
    f("tsc-deadline", 1, 0, Reg::Ecx, 24),
    f("aes", 1, 0, Reg::Ecx, 25),
    f("xsave", 1, 0, Reg::Ecx, 26),
    f("avx", 1, 0, Reg::Ecx, 28),
    f("f16c", 1, 0, Reg::Ecx, 29),
    f("rdrand", 1, 0, Reg::Ecx, 30),
    f("hypervisor", 1, 0, Reg::Ecx, 31),
    f("fsgsbase", 7, 0, Reg::Ebx, 0),
    f("tsc_adjust", 7, 0, Reg::Ebx, 1),
    f("bmi1", 7, 0, Reg::Ebx, 3),
    f("hle", 7, 0, Reg::Ebx, 4),
    f("avx2", 7, 0, Reg::Ebx, 5),
    f("smep", 7, 0, Reg::Ebx, 7),
    f("bmi2", 7, 0, Reg::Ebx, 8),
    f("erms", 7, 0, Reg::Ebx, 9),
    f("invpcid", 7, 0, Reg::Ebx, 10),
    f("rtm", 7, 0, Reg::Ebx, 11),
    f("mpx", 7, 0, Reg::Ebx, 14),
    f("avx512f", 7, 0, Reg::Ebx, 16),
    f("avx512dq", 7, 0, Reg::Ebx, 17),
    f("rdseed", 7, 0, Reg::Ebx, 18),
    f("adx", 7, 0, Reg::Ebx, 19),
    f("smap", 7, 0, Reg::Ebx, 20),
    f("clflushopt", 7, 0, Reg::Ebx, 23),
    f("clwb", 7, 0, Reg::Ebx, 24),
    f("avx512cd", 7, 0, Reg::Ebx, 28),
    f("sha-ni", 7, 0, Reg::Ebx, 29),
    f("avx512bw", 7, 0, Reg::Ebx, 30),
    f("avx512vl", 7, 0, Reg::Ebx, 31),
    f("umip", 7, 0, Reg::Ecx, 2),
    f("pku", 7, 0, Reg::Ecx, 3),
    f("vaes", 7, 0, Reg::Ecx, 9),
    f("vpclmulqdq", 7, 0, Reg::Ecx, 10),
    f("la57", 7, 0, Reg::Ecx, 16),
    f("rdpid", 7, 0, Reg::Ecx, 22),
    f("md-clear", 7, 0, Reg::Edx, 10),
    f("spec-ctrl", 7, 0, Reg::Edx, 26),
    f("stibp", 7, 0, Reg::Edx, 27),
    f("arch-capabilities", 7, 0, Reg::Edx, 29),
    f("ssbd", 7, 0, Reg::Edx, 31),
    f("xsaveopt", 0xd, 1, Reg::Eax, 0),
    f("xsavec", 0xd, 1, Reg::Eax, 1),
    f("xsaves", 0xd, 1, Reg::Eax, 3),
    f("lahf_lm", 0x8000_0001, 0, Reg::Ecx, 0),
    f("svm", 0x8000_0001, 0, Reg::Ecx, 2),
    f("abm", 0x8000_0001, 0, Reg::Ecx, 5),
    f("sse4a", 0x8000_0001, 0, Reg::Ecx, 6),
    f("misalignsse", 0x8000_0001, 0, Reg::Ecx, 7),
    f("3dnowprefetch", 0x8000_0001, 0, Reg::Ecx, 8),
    f("xop", 0x8000_0001, 0, Reg::Ecx, 11),
    f("fma4", 0x8000_0001, 0, Reg::Ecx, 16),
    f("tbm", 0x8000_0001, 0, Reg::Ecx, 21),
    f("topoext", 0x8000_0001, 0, Reg::Ecx, 22),
    f("syscall", 0x8000_0001, 0, Reg::Edx, 11),
    f("nx", 0x8000_0001, 0, Reg::Edx, 20),
    f("mmxext", 0x8000_0001, 0, Reg::Edx, 22),
    f("pdpe1gb", 0x8000_0001, 0, Reg::Edx, 26),
    f("rdtscp", 0x8000_0001, 0, Reg::Edx, 27),
    f("lm", 0x8000_0001, 0, Reg::Edx, 29),
    f("invtsc", 0x8000_0007, 0, Reg::Edx, 8),
    f("ibpb", 0x8000_0008, 0, Reg::Ebx, 12),
    f("amd-ssbd", 0x8000_0008, 0, Reg::Ebx, 24),
    f("npt", 0x8000_000a, 0, Reg::Edx, 0),
];

/// Looks a feature up by its libvirt name.
pub fn feature(name: &str) -> Option<&'static Feature> {
    FEATURES.iter().find(|f| f.name == name)
}

/// Errors shaping CPUID.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CpuidError {
    /// Unknown feature name.
    #[error("Unknown CPU feature {0:?}")]
    UnknownFeature(String),
    /// `require` of a feature the host lacks.
    #[error("CPU feature {0:?} is required but the host does not provide it")]
    MissingRequired(String),
    /// `forbid` of a feature the host has.
    #[error("CPU feature {0:?} is forbidden but the host provides it")]
    Forbidden(String),
    /// `force` of a feature whose leaf the host does not report.
    #[error("CPU feature {0:?} cannot be forced: its CPUID leaf is absent")]
    LeafAbsent(String),
    /// Topology that does not multiply out.
    #[error("Topology {sockets}x{cores}x{threads} does not give {vcpus} vCPUs")]
    Topology {
        /// Sockets.
        sockets: u32,
        /// Cores.
        cores: u32,
        /// Threads.
        threads: u32,
        /// vCPUs asked for.
        vcpus: u32,
    },
}

fn find(entries: &mut [CpuidEntry], function: u32, index: u32) -> Option<&mut CpuidEntry> {
    entries.iter_mut().find(|e| {
        e.function == function && (e.index == index || e.flags & FLAG_SIGNIFICANT_INDEX == 0)
    })
}

fn has(entries: &mut [CpuidEntry], feat: &Feature) -> bool {
    find(entries, feat.function, feat.index).is_some_and(|e| e.reg(feat.reg) & (1 << feat.bit) != 0)
}

/// Applies the model and the feature policies to KVM's supported list (once per VM).
pub fn apply_template(
    entries: &mut [CpuidEntry],
    template: &CpuTemplate,
) -> Result<(), CpuidError> {
    if template.model == CpuModel::HostModel {
        if let Some(feat) = feature("invtsc") {
            clear(entries, feat);
        }
        // Architectural PMU: counters differ per host and are not migrated.
        for e in entries.iter_mut().filter(|e| e.function == 0xa) {
            (e.eax, e.ebx, e.ecx, e.edx) = (0, 0, 0, 0);
        }
    }
    for (name, policy) in &template.features {
        let feat = feature(name).ok_or_else(|| CpuidError::UnknownFeature(name.clone()))?;
        let present = has(entries, feat);
        match policy {
            FeaturePolicy::Require if !present => {
                return Err(CpuidError::MissingRequired(name.clone()))
            }
            FeaturePolicy::Forbid if present => return Err(CpuidError::Forbidden(name.clone())),
            FeaturePolicy::Disable => clear(entries, feat),
            FeaturePolicy::Force => {
                let e = find(entries, feat.function, feat.index)
                    .ok_or_else(|| CpuidError::LeafAbsent(name.clone()))?;
                *e.reg_mut(feat.reg) |= 1 << feat.bit;
            }
            FeaturePolicy::Require | FeaturePolicy::Forbid | FeaturePolicy::Optional => {}
        }
    }
    Ok(())
}

fn clear(entries: &mut [CpuidEntry], feat: &Feature) {
    if let Some(e) = find(entries, feat.function, feat.index) {
        *e.reg_mut(feat.reg) &= !(1 << feat.bit);
    }
}

/// CPU vendor from leaf 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    /// GenuineIntel.
    Intel,
    /// AuthenticAMD or HygonGenuine.
    Amd,
    /// Anything else.
    Other,
}

/// The vendor the entries describe.
pub fn vendor(entries: &[CpuidEntry]) -> Vendor {
    let Some(e) = entries.iter().find(|e| e.function == 0) else {
        return Vendor::Other;
    };
    let mut id = [0u8; 12];
    id[..4].copy_from_slice(&e.ebx.to_le_bytes());
    id[4..8].copy_from_slice(&e.edx.to_le_bytes());
    id[8..].copy_from_slice(&e.ecx.to_le_bytes());
    match &id {
        b"GenuineIntel" => Vendor::Intel,
        b"AuthenticAMD" | b"HygonGenuine" => Vendor::Amd,
        _ => Vendor::Other,
    }
}

/// The KVM paravirtual signature leaf value ("KVMKVMKVM\0\0\0").
const KVM_SIGNATURE: [u32; 3] = [0x4b4d_564b, 0x564b_4d56, 0x0000_004d];

/// Shapes the VM-wide list for vCPU `index`: APIC ID in leaf 1, topology leaves 4, 0xB,
/// 0x1F, 0x8000_0008 and 0x8000_001E, the hypervisor bit and the KVM signature leaf.
///
/// ```
/// use arch::x86_64::cpuid::{for_vcpu, CpuidEntry, Topology};
/// let base = vec![
///     CpuidEntry { function: 0, eax: 0xb, ..Default::default() },
///     CpuidEntry { function: 1, ..Default::default() },
/// ];
/// let topo = Topology { sockets: 1, cores: 2, threads: 2 };
/// let e = for_vcpu(&base, 3, &topo).unwrap();
/// assert_eq!(e[1].ebx >> 24, 3);
/// assert_ne!(e[1].ecx & (1 << 31), 0);
/// ```
pub fn for_vcpu(
    base: &[CpuidEntry],
    index: u32,
    topo: &Topology,
) -> Result<Vec<CpuidEntry>, CpuidError> {
    if topo.vcpus() == 0 || index >= topo.vcpus() {
        return Err(CpuidError::Topology {
            sockets: topo.sockets,
            cores: topo.cores,
            threads: topo.threads,
            vcpus: index + 1,
        });
    }
    let apic_id = topo.apic_id(index);
    let thread_bits = topo.thread_bits();
    let pkg_bits = thread_bits + topo.core_bits();
    let logical_per_pkg = topo.threads * topo.cores;
    let vendor = vendor(base);
    let max_basic = base
        .iter()
        .find(|e| e.function == 0)
        .map(|e| e.eax)
        .unwrap_or(0);

    let mut out: Vec<CpuidEntry> = base
        .iter()
        .filter(|e| e.function != 0xb && e.function != 0x1f)
        .copied()
        .collect();
    for e in out.iter_mut() {
        match e.function {
            1 => {
                e.ebx =
                    (e.ebx & 0x0000_ffff) | (apic_id << 24) | ((1u32 << pkg_bits).min(255) << 16);
                e.ecx |= 1 << 31;
                if logical_per_pkg > 1 {
                    e.edx |= 1 << 28;
                } else {
                    e.edx &= !(1 << 28);
                }
            }
            4 if vendor == Vendor::Intel && e.eax & 0x1f != 0 => {
                let level = (e.eax >> 5) & 0x7;
                let sharing = if level >= 3 { pkg_bits } else { thread_bits };
                e.eax = (e.eax & 0x3fff)
                    | (((1u32 << sharing) - 1) << 14)
                    | ((((1u32 << topo.core_bits()) - 1) & 0x3f) << 26);
            }
            0x4000_0000 => {
                e.eax = e.eax.max(0x4000_0001);
                (e.ebx, e.ecx, e.edx) = (KVM_SIGNATURE[0], KVM_SIGNATURE[1], KVM_SIGNATURE[2]);
            }
            0x8000_0001 if vendor == Vendor::Amd => {
                if logical_per_pkg > 1 {
                    e.ecx |= 1 << 1;
                } else {
                    e.ecx &= !(1 << 1);
                }
            }
            0x8000_0008 if vendor == Vendor::Amd => {
                e.ecx = (e.ecx & !0xf0ff) | (pkg_bits << 12) | (logical_per_pkg - 1).min(255);
            }
            0x8000_001e if vendor == Vendor::Amd => {
                let core = (index / topo.threads) % topo.cores;
                let socket = index / logical_per_pkg;
                e.eax = apic_id;
                e.ebx = ((topo.threads - 1) << 8) | (core & 0xff);
                e.ecx = socket & 0xff;
                e.edx = 0;
            }
            _ => {}
        }
    }
    if max_basic >= 0xb {
        out.extend(topology_leaf(0xb, apic_id, topo));
    }
    if max_basic >= 0x1f && base.iter().any(|e| e.function == 0x1f) {
        out.extend(topology_leaf(0x1f, apic_id, topo));
    }
    Ok(out)
}

/// The extended topology leaf (0xB or 0x1F): SMT level, core level, terminator.
fn topology_leaf(function: u32, apic_id: u32, topo: &Topology) -> [CpuidEntry; 3] {
    let thread_bits = topo.thread_bits();
    let pkg_bits = thread_bits + topo.core_bits();
    let leaf = |index: u32, eax: u32, ebx: u32, level_type: u32| CpuidEntry {
        function,
        index,
        flags: FLAG_SIGNIFICANT_INDEX,
        eax,
        ebx,
        ecx: (level_type << 8) | index,
        edx: apic_id,
    };
    [
        leaf(0, thread_bits, topo.threads, 1),
        leaf(1, pkg_bits, topo.threads * topo.cores, 2),
        leaf(2, 0, 0, 0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32, eax: u32, ebx: u32, ecx: u32, edx: u32) -> CpuidEntry {
        CpuidEntry {
            function,
            index,
            flags: if function == 7 || function == 0xd || function == 4 {
                FLAG_SIGNIFICANT_INDEX
            } else {
                0
            },
            eax,
            ebx,
            ecx,
            edx,
        }
    }

    fn intel_base() -> Vec<CpuidEntry> {
        // "GenuineIntel": EBX "Genu", EDX "ineI", ECX "ntel".
        vec![
            entry(0, 0, 0x1f, 0x756e_6547, 0x6c65_746e, 0x4965_6e69),
            entry(1, 0, 0x806e9, 0x0008_0800, 1 << 28 | 1 << 5, 1 << 4),
            entry(4, 0, 0x121, 0, 0, 0),
            entry(4, 3, 0x163, 0, 0, 0),
            entry(7, 0, 0, 1 << 5, 0, 0),
            entry(0xa, 0, 0x0730_0403, 0, 0, 0),
            entry(0xb, 0, 1, 2, 0x100, 0),
            entry(0x1f, 0, 1, 2, 0x100, 0),
            entry(0x4000_0000, 0, 0x4000_0001, 0, 0, 0),
            entry(0x8000_0007, 0, 0, 0, 0, 1 << 8),
        ]
    }

    #[test]
    fn apic_ids_pack_topology() {
        let t = Topology {
            sockets: 2,
            cores: 3,
            threads: 2,
        };
        let ids: Vec<u32> = (0..t.vcpus()).map(|i| t.apic_id(i)).collect();
        // Thread bit 0, core bits 1..3, socket bit 3.
        assert_eq!(ids, vec![0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13]);
        assert_eq!(Topology::flat(4).apic_id(3), 3);
    }

    #[test]
    fn per_vcpu_leaves() {
        let t = Topology {
            sockets: 2,
            cores: 2,
            threads: 2,
        };
        let e = for_vcpu(&intel_base(), 5, &t).expect("valid vcpu");
        let get = |f: u32, i: u32| {
            *e.iter()
                .find(|x| x.function == f && x.index == i)
                .expect("leaf present")
        };
        assert_eq!(get(1, 0).ebx >> 24, 5);
        assert_eq!((get(1, 0).ebx >> 16) & 0xff, 4);
        assert_eq!(get(1, 0).ecx >> 31, 1, "hypervisor bit");
        assert_eq!(get(1, 0).ebx & 0xffff, 0x0800, "CLFLUSH size kept");
        let smt = get(0xb, 0);
        assert_eq!((smt.eax, smt.ebx, smt.ecx, smt.edx), (1, 2, 0x100, 5));
        let core = get(0xb, 1);
        assert_eq!((core.eax, core.ebx, core.ecx, core.edx), (2, 4, 0x201, 5));
        assert_eq!(get(0xb, 2).ecx, 2);
        assert_eq!(get(0x1f, 1).eax, 2);
        assert_eq!(e.iter().filter(|x| x.function == 0xb).count(), 3);
        // L1: shared by the 2 threads; L3: by the 4 logical CPUs of the package.
        assert_eq!((get(4, 0).eax >> 14) & 0xfff, 1);
        assert_eq!((get(4, 3).eax >> 14) & 0xfff, 3);
        assert_eq!(get(4, 0).eax >> 26, 1);
        let kvm = get(0x4000_0000, 0);
        let mut sig = Vec::new();
        for r in [kvm.ebx, kvm.ecx, kvm.edx] {
            sig.extend_from_slice(&r.to_le_bytes());
        }
        assert_eq!(&sig, b"KVMKVMKVM\0\0\0");
        assert!(for_vcpu(&intel_base(), 8, &t).is_err());
    }

    #[test]
    fn host_model_drops_non_migratable_bits() {
        let mut e = intel_base();
        apply_template(&mut e, &CpuTemplate::default()).expect("host-model");
        assert!(!has(&mut e, feature("invtsc").expect("known")));
        assert_eq!(e.iter().find(|x| x.function == 0xa).map(|x| x.eax), Some(0));
        let mut p = intel_base();
        apply_template(
            &mut p,
            &CpuTemplate {
                model: CpuModel::HostPassthrough,
                features: vec![],
            },
        )
        .expect("passthrough");
        assert_eq!(p, intel_base());
    }

    #[test]
    fn feature_policies() {
        let t = |features: Vec<(&str, FeaturePolicy)>| CpuTemplate {
            model: CpuModel::HostPassthrough,
            features: features
                .into_iter()
                .map(|(n, p)| (n.to_string(), p))
                .collect(),
        };
        let mut e = intel_base();
        apply_template(
            &mut e,
            &t(vec![
                ("avx2", FeaturePolicy::Disable),
                ("vmx", FeaturePolicy::Require),
                ("aes", FeaturePolicy::Force),
                ("avx512f", FeaturePolicy::Optional),
                ("smep", FeaturePolicy::Forbid),
            ]),
        )
        .expect("policies hold");
        assert!(!has(&mut e, feature("avx2").expect("known")));
        assert!(has(&mut e, feature("aes").expect("known")));
        assert!(has(&mut e, feature("vmx").expect("known")));
        assert!(!has(&mut e, feature("avx512f").expect("known")));

        let mut e = intel_base();
        assert_eq!(
            apply_template(&mut e, &t(vec![("svm", FeaturePolicy::Require)])),
            Err(CpuidError::MissingRequired("svm".into()))
        );
        assert_eq!(
            apply_template(&mut e, &t(vec![("avx2", FeaturePolicy::Forbid)])),
            Err(CpuidError::Forbidden("avx2".into()))
        );
        assert_eq!(
            apply_template(&mut e, &t(vec![("nosuch", FeaturePolicy::Disable)])),
            Err(CpuidError::UnknownFeature("nosuch".into()))
        );
        assert_eq!(
            apply_template(&mut e, &t(vec![("lm", FeaturePolicy::Force)])),
            Err(CpuidError::LeafAbsent("lm".into()))
        );
        assert!("Skylake-Client".parse::<CpuModel>().is_err());
        assert_eq!("forbid".parse::<FeaturePolicy>(), Ok(FeaturePolicy::Forbid));
    }
}
