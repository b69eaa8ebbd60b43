//! The virtual hardware of a VirtualMachineInstance (`spec.domain`): resources, CPU topology
//! and model, memory, machine type and firmware (including direct kernel boot). Devices are
//! in [`super::devices`]. Field names and JSON shapes are KubeVirt's `kubevirt.io/v1`.

use super::devices::Devices;
use crate::unstructured::Unstructured;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;
use std::collections::BTreeMap;

/// A map of resource names (`cpu`, `memory`, ...) to quantities.
pub type ResourceList = BTreeMap<String, Quantity>;

/// The virtual machine's hardware (`spec.domain`).
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct DomainSpec {
    /// Resources requested by the VirtualMachineInstance: CPU and memory requests and limits.
    #[serde(skip_serializing_if = "ResourceRequirements::is_empty")]
    pub resources: ResourceRequirements,
    /// CPU topology, model and features. Defaults to one socket, one core, one thread.
    pub cpu: Option<Cpu>,
    /// Guest memory and hugepages.
    pub memory: Option<Memory>,
    /// The emulated machine type, such as `q35`.
    pub machine: Option<Machine>,
    /// Firmware: UUID, serial, bootloader (BIOS/EFI) and direct kernel boot.
    pub firmware: Option<Firmware>,
    /// Guest clock configuration (utc or timezone, timers). Stored as given.
    pub clock: Option<Unstructured>,
    /// Hypervisor features (acpi, apic, hyperv, smm, ...). Stored as given.
    pub features: Option<Unstructured>,
    /// Devices attached to the virtual machine: disks, interfaces, inputs, ...
    pub devices: Devices,
    /// IO thread policy: `shared`, `auto` or `supplementalPool`.
    pub io_threads_policy: Option<String>,
    /// IO threads configuration. Stored as given.
    pub io_threads: Option<Unstructured>,
    /// SMBIOS chassis information. Stored as given.
    pub chassis: Option<Unstructured>,
    /// Launch security (SEV, TDX, Secure Execution). Stored as given.
    pub launch_security: Option<Unstructured>,
}

/// Resource requests and limits of a VirtualMachineInstance (`spec.domain.resources`).
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ResourceRequirements {
    /// Minimum resources required (`cpu`, `memory`). Memory is the guest memory unless
    /// `spec.domain.memory.guest` is set.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: ResourceList,
    /// Maximum resources allowed.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: ResourceList,
    /// Don't ask the scheduler to account for the virtualization overhead of this VMI.
    pub overcommit_guest_overhead: Option<bool>,
}

impl ResourceRequirements {
    /// Whether nothing is requested or limited.
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
            && self.limits.is_empty()
            && self.overcommit_guest_overhead.is_none()
    }
}

/// CPU topology, model and features (`spec.domain.cpu`).
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Cpu {
    /// Number of cores inside the VMI. Must be at least 1.
    pub cores: Option<u32>,
    /// Number of sockets inside the VMI. Must be at least 1.
    pub sockets: Option<u32>,
    /// Maximum number of sockets for CPU hotplug.
    pub max_sockets: Option<u32>,
    /// Number of threads inside the VMI. Must be at least 1.
    pub threads: Option<u32>,
    /// CPU model: `host-passthrough`, `host-model` (the default) or a named libvirt model.
    pub model: Option<String>,
    /// CPU features to require, forbid or make optional.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<CpuFeature>,
    /// Pin each vCPU to a dedicated physical CPU.
    pub dedicated_cpu_placement: Option<bool>,
    /// Guest NUMA topology. Stored as given.
    pub numa: Option<Unstructured>,
    /// Place the emulator thread on a dedicated CPU (requires dedicatedCpuPlacement).
    pub isolate_emulator_thread: Option<bool>,
    /// Realtime tuning. Stored as given.
    pub realtime: Option<Unstructured>,
}

impl Cpu {
    /// The number of vCPUs, `sockets * cores * threads`, each count defaulting to 1.
    ///
    /// ```
    /// let cpu = api::kubevirt::domain::Cpu { cores: Some(2), threads: Some(2), ..Default::default() };
    /// assert_eq!(cpu.vcpus(), 4);
    /// ```
    pub fn vcpus(&self) -> u64 {
        let n = |v: Option<u32>| u64::from(v.unwrap_or(1).max(1));
        n(self.sockets) * n(self.cores) * n(self.threads)
    }
}

/// The policy of a CPU feature.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CpuFeaturePolicy {
    /// The feature is enabled even if the host CPU lacks it.
    Force,
    /// The VMI is not started unless the host CPU has the feature (the default).
    #[default]
    Require,
    /// The feature is enabled if the host CPU has it.
    Optional,
    /// The feature is disabled.
    Disable,
    /// The VMI is not started if the host CPU has the feature.
    Forbid,
}

/// One CPU feature (`spec.domain.cpu.features[]`).
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct CpuFeature {
    /// The CPU feature name, e.g. `pcid`.
    pub name: String,
    /// force, require (the default), optional, disable or forbid.
    pub policy: Option<CpuFeaturePolicy>,
}

/// Guest memory (`spec.domain.memory`).
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Memory {
    /// Back guest memory with hugepages of this size.
    pub hugepages: Option<Hugepages>,
    /// The amount of memory the guest sees. Defaults to `resources.requests.memory`.
    pub guest: Option<Quantity>,
    /// The maximum guest memory for memory hotplug.
    pub max_guest: Option<Quantity>,
}

/// Hugepages backing of guest memory.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Hugepages {
    /// The hugepage size, `2Mi` or `1Gi`.
    pub page_size: Option<String>,
}

/// The emulated machine (`spec.domain.machine`).
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Machine {
    /// The machine type, e.g. `q35` (x86_64), `s390-ccw-virtio` (s390x), `pseries` (ppc64le).
    #[serde(rename = "type")]
    pub type_: Option<String>,
}

/// Firmware of the virtual machine (`spec.domain.firmware`).
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Firmware {
    /// The SMBIOS system UUID.
    pub uuid: Option<String>,
    /// BIOS or EFI bootloader. Defaults to BIOS.
    pub bootloader: Option<Bootloader>,
    /// The SMBIOS system serial number.
    pub serial: Option<String>,
    /// Boot a kernel and initrd directly, without a bootloader.
    pub kernel_boot: Option<KernelBoot>,
    /// ACPI tables to add (SLIC, MSDM). Stored as given.
    pub acpi: Option<Unstructured>,
}

/// The bootloader (`spec.domain.firmware.bootloader`): exactly one of `bios` and `efi`.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Bootloader {
    /// Legacy BIOS.
    pub bios: Option<Bios>,
    /// UEFI.
    pub efi: Option<Efi>,
}

/// BIOS bootloader options.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Bios {
    /// Show BIOS output on the serial console.
    pub use_serial: Option<bool>,
}

/// EFI bootloader options.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Efi {
    /// Enable Secure Boot (requires SMM). Defaults to true.
    pub secure_boot: Option<bool>,
    /// Keep the EFI variables across restarts.
    pub persistent: Option<bool>,
}

/// Direct kernel boot (`spec.domain.firmware.kernelBoot`).
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct KernelBoot {
    /// The kernel command line. Only allowed together with `container`.
    pub kernel_args: Option<String>,
    /// The container image holding the kernel and initrd.
    pub container: Option<KernelBootContainer>,
}

/// Where the kernel and initrd of a direct kernel boot come from.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct KernelBootContainer {
    /// The image holding the kernel and initrd.
    pub image: String,
    /// Name of a Secret with the credentials to pull the image.
    pub image_pull_secret: Option<String>,
    /// Path of the kernel inside the image.
    pub kernel_path: Option<String>,
    /// Path of the initrd inside the image.
    pub initrd_path: Option<String>,
    /// `Always`, `Never` or `IfNotPresent`.
    pub image_pull_policy: Option<String>,
}
