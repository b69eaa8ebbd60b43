//! Resource kinds for the tests and benchmarks that exercise the store alone: named as the
//! real kinds, stored as they come (no defaults, validation or schema).

use api::resource::ResourceDef;

/// A VirtualMachine-shaped resource with a status subresource and no-op hooks.
pub const VM: ResourceDef = ResourceDef {
    group: "kubevirt.io",
    kind: "VirtualMachine",
    list_kind: "VirtualMachineList",
    plural: "virtualmachines",
    singular: "virtualmachine",
    has_status: true,
    ..ResourceDef::OPAQUE
};
