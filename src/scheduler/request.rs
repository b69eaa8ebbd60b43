//! What a VMI asks of a node: CPU in millicores and memory in bytes, the guest's own needs
//! plus the VMM's overhead (vCPU thread stacks, device queues, page tables), as KubeVirt
//! adds virt-launcher's overhead to the pod's requests.

use api::kubevirt::virtualmachineinstance::VirtualMachineInstance;
use api::quantity;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use std::collections::BTreeMap;

/// Fixed memory the in-process VMM needs per VM: its `vmm-<vm>` thread, device state and
/// event loop buffers.
pub const VMM_OVERHEAD_BYTES: i64 = 16 << 20;
/// Memory per vCPU: the thread's stack and its KVM run structure.
pub const VCPU_OVERHEAD_BYTES: i64 = 2 << 20;
/// The CPU the scheduler charges per vCPU when the VMI requests none: KubeVirt's default
/// `cpuAllocationRatio` of 10 (100 millicores per vCPU).
pub const DEFAULT_MILLI_CPU_PER_VCPU: i64 = 100;

/// Resources a VMI takes from its node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Request {
    /// CPU in millicores.
    pub milli_cpu: i64,
    /// Memory in bytes.
    pub memory: i64,
}

impl Request {
    /// The sum of two requests.
    pub fn plus(self, other: Request) -> Request {
        Request {
            milli_cpu: self.milli_cpu.saturating_add(other.milli_cpu),
            memory: self.memory.saturating_add(other.memory),
        }
    }
}

/// The quantity of `name` in `list`, parsed with `f`, if present and valid.
pub fn quantity_of(
    list: Option<&BTreeMap<String, Quantity>>,
    name: &str,
    f: fn(&quantity::ParsedQuantity) -> i64,
) -> Option<i64> {
    let q = list?.get(name)?;
    quantity::parse(&q.0).ok().map(|p| f(&p))
}

/// The guest memory of a VMI in bytes: `spec.domain.memory.guest`, else the memory request,
/// else the memory limit; 0 when none is given.
pub fn guest_memory(vmi: &VirtualMachineInstance) -> i64 {
    let domain = &vmi.spec.domain;
    let guest = domain
        .memory
        .as_ref()
        .and_then(|m| m.guest.as_ref())
        .and_then(|q| quantity::parse(&q.0).ok())
        .map(|p| p.value());
    guest
        .or_else(|| quantity_of(Some(&domain.resources.requests), "memory", |p| p.value()))
        .or_else(|| quantity_of(Some(&domain.resources.limits), "memory", |p| p.value()))
        .unwrap_or(0)
}

/// The vCPUs of a VMI (`sockets * cores * threads`, 1 by default).
pub fn vcpus(vmi: &VirtualMachineInstance) -> u64 {
    vmi.spec
        .domain
        .cpu
        .as_ref()
        .map_or(1, api::kubevirt::domain::Cpu::vcpus)
}

/// What `vmi` takes from the node that runs it.
pub fn of(vmi: &VirtualMachineInstance) -> Request {
    let resources = &vmi.spec.domain.resources;
    let vcpus = i64::try_from(vcpus(vmi)).unwrap_or(i64::MAX);
    let milli_cpu = quantity_of(Some(&resources.requests), "cpu", |p| p.milli_value())
        .unwrap_or(vcpus.saturating_mul(DEFAULT_MILLI_CPU_PER_VCPU));
    let requested_memory = quantity_of(Some(&resources.requests), "memory", |p| p.value())
        .unwrap_or_else(|| guest_memory(vmi));
    let overhead = if resources.overcommit_guest_overhead == Some(true) {
        0
    } else {
        // Page tables: 8 bytes per 4 KiB guest page, rounded to whole pages.
        let page_tables = guest_memory(vmi) / 512;
        VMM_OVERHEAD_BYTES + vcpus.saturating_mul(VCPU_OVERHEAD_BYTES) + page_tables
    };
    Request {
        milli_cpu,
        memory: requested_memory.saturating_add(overhead),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vmi(spec: serde_json::Value) -> VirtualMachineInstance {
        serde_json::from_value(json!({"metadata": {"name": "v"}, "spec": spec})).unwrap()
    }

    #[test]
    fn requests_plus_overhead() {
        let v = vmi(json!({"domain": {"cpu": {"cores": 2},
            "resources": {"requests": {"cpu": "1500m", "memory": "1Gi"}}, "devices": {}}}));
        let r = of(&v);
        assert_eq!(r.milli_cpu, 1500);
        assert_eq!(
            r.memory,
            (1 << 30) + VMM_OVERHEAD_BYTES + 2 * VCPU_OVERHEAD_BYTES + (1 << 30) / 512
        );
    }

    #[test]
    fn cpu_defaults_to_a_tenth_per_vcpu_and_memory_to_guest() {
        let v = vmi(json!({"domain": {"cpu": {"sockets": 2, "cores": 2},
            "memory": {"guest": "128Mi"}, "devices": {}}}));
        let r = of(&v);
        assert_eq!(r.milli_cpu, 400);
        assert_eq!(
            r.memory,
            (128 << 20) + VMM_OVERHEAD_BYTES + 4 * VCPU_OVERHEAD_BYTES + (128 << 20) / 512
        );
    }

    #[test]
    fn overcommitted_overhead_is_not_charged() {
        let v = vmi(
            json!({"domain": {"resources": {"requests": {"memory": "64Mi"},
            "overcommitGuestOverhead": true}, "devices": {}}}),
        );
        assert_eq!(of(&v).memory, 64 << 20);
    }
}
