//! What a VM asks of its CPUs, in KubeVirt's `domain.cpu` terms, on every architecture:
//! the model ([`CpuModel`]), feature policies ([`FeaturePolicy`]) and the
//! sockets × cores × threads [`Topology`]. Each architecture applies them its own way
//! (x86_64: CPUID in `cpuid`); the types are shared so generic VMM code and the
//! command line speak one language.

use std::str::FromStr;

/// Errors parsing a CPU model or feature policy.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CpuError {
    /// A named model (e.g. `Skylake-Client`) we do not have a definition for.
    #[error("CPU model {0:?} is not supported (use host-passthrough or host-model)")]
    UnsupportedModel(String),
    /// Unknown feature policy.
    #[error("Unknown CPU feature policy {0:?}")]
    UnknownPolicy(String),
}

/// KubeVirt `domain.cpu.model`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CpuModel {
    /// Everything KVM supports on this host.
    HostPassthrough,
    /// The host CPU minus what cannot be kept across hosts (invariant TSC, the PMU leaf).
    /// KubeVirt's default.
    #[default]
    HostModel,
}

impl FromStr for CpuModel {
    type Err = CpuError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "host-passthrough" => Ok(Self::HostPassthrough),
            "host-model" | "" => Ok(Self::HostModel),
            other => Err(CpuError::UnsupportedModel(other.to_string())),
        }
    }
}

/// KubeVirt `domain.cpu.features[].policy` (libvirt semantics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FeaturePolicy {
    /// Set the bit even if the host lacks it.
    Force,
    /// Fail unless the host has it (KubeVirt's default policy).
    #[default]
    Require,
    /// Keep it if the host has it.
    Optional,
    /// Clear it.
    Disable,
    /// Fail if the host has it.
    Forbid,
}

impl FromStr for FeaturePolicy {
    type Err = CpuError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "force" => Ok(Self::Force),
            "require" | "" => Ok(Self::Require),
            "optional" => Ok(Self::Optional),
            "disable" => Ok(Self::Disable),
            "forbid" => Ok(Self::Forbid),
            other => Err(CpuError::UnknownPolicy(other.to_string())),
        }
    }
}

/// The CPU a VM asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuTemplate {
    /// Model.
    pub model: CpuModel,
    /// `(feature name, policy)` in the order given.
    pub features: Vec<(String, FeaturePolicy)>,
}

/// sockets × cores × threads, as KubeVirt's `domain.cpu`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Topology {
    /// Sockets.
    pub sockets: u32,
    /// Cores per socket.
    pub cores: u32,
    /// Threads per core.
    pub threads: u32,
}

impl Topology {
    /// `vcpus` single-threaded cores in one socket.
    pub fn flat(vcpus: u32) -> Self {
        Self {
            sockets: 1,
            cores: vcpus.max(1),
            threads: 1,
        }
    }

    /// Number of vCPUs.
    pub fn vcpus(&self) -> u32 {
        self.sockets * self.cores * self.threads
    }

    pub(crate) fn thread_bits(&self) -> u32 {
        ceil_log2(self.threads)
    }

    pub(crate) fn core_bits(&self) -> u32 {
        ceil_log2(self.cores)
    }

    /// APIC ID of vCPU `index`: socket, core and thread fields packed as the topology
    /// leaves describe them.
    pub fn apic_id(&self, index: u32) -> u32 {
        let thread = index % self.threads;
        let core = (index / self.threads) % self.cores;
        let socket = index / (self.threads * self.cores);
        (socket << (self.thread_bits() + self.core_bits())) | (core << self.thread_bits()) | thread
    }
}

fn ceil_log2(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_and_policies_parse_as_kubevirt_spells_them() {
        assert_eq!("host-model".parse(), Ok(CpuModel::HostModel));
        assert_eq!("".parse(), Ok(CpuModel::HostModel));
        assert_eq!("host-passthrough".parse(), Ok(CpuModel::HostPassthrough));
        assert_eq!(
            "POWER9".parse::<CpuModel>(),
            Err(CpuError::UnsupportedModel("POWER9".into()))
        );
        assert_eq!("optional".parse(), Ok(FeaturePolicy::Optional));
        assert!("maybe".parse::<FeaturePolicy>().is_err());
    }

    #[test]
    fn topology_counts_and_packs() {
        let t = Topology {
            sockets: 2,
            cores: 3,
            threads: 2,
        };
        assert_eq!(t.vcpus(), 12);
        // Threads take 1 bit, cores 2 (3 rounded up to 4): vCPU 7 is socket 1, core 0,
        // thread 1.
        assert_eq!(t.apic_id(7), 0b1001);
        assert_eq!(Topology::flat(0).vcpus(), 1);
    }
}
