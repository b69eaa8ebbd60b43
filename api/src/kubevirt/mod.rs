//! The `kubevirt.io/v1` group: VirtualMachine, VirtualMachineInstance and
//! VirtualMachineInstanceMigration, their shared parts (domain, devices, volumes, networks,
//! conditions), and KubeVirt's defaulting and validation of them.

pub mod condition;
pub mod defaults;
pub mod devices;
pub mod domain;
pub mod migration;
pub mod network;
pub mod validation;
pub mod virtualmachine;
pub mod virtualmachineinstance;
pub mod volume;

/// The API group.
pub const GROUP: &str = "kubevirt.io";
/// The served version.
pub const VERSION: &str = "v1";
