//! Defaulting of VirtualMachines and VirtualMachineInstances as KubeVirt's mutating webhook
//! and `pkg/defaults` apply it, with the cluster configuration of a fresh OpenShift
//! Virtualization install (masquerade as the default pod interface, no memory overcommit,
//! the default CPU request left to the scheduler).
//!
//! Deliberate differences from KubeVirt, because monovirt's VMM emulates only virtio block
//! devices: a disk with no bus gets `virtio` (KubeVirt picks `sata` on amd64 and `virtio` on
//! arm64/s390x). Not done here because it is not a pure function of the object: a random
//! `firmware.uuid` (the VM controller derives it from the VM instead).

use super::devices::{CdromTarget, Disk, DiskTarget, Interface};
use super::domain::{Cpu, Machine, Memory};
use super::network::{Network, PodNetwork};
use super::virtualmachine::VirtualMachine;
use super::virtualmachineinstance::{
    CpuTopology, MemoryStatus, VirtualMachineInstance, VirtualMachineInstanceSpec,
};
use crate::overlay::apply_typed;
use crate::quantity;
use crate::unstructured::Unstructured;
use serde_json::Value;

/// KubeVirt's default CPU model.
pub const DEFAULT_CPU_MODEL: &str = "host-model";

/// The architecture of this build in KubeVirt's (Go's) spelling.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The default machine type of an architecture.
pub fn default_machine_type(arch: &str) -> &'static str {
    match arch {
        "s390x" => "s390-ccw-virtio",
        "arm64" => "virt",
        "ppc64le" => "pseries",
        _ => "q35",
    }
}

/// Defaults a VirtualMachine object in place (KubeVirt's VM mutator: the template's
/// architecture and machine type).
///
/// ```
/// let mut vm = serde_json::json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
///     "metadata": {"name": "vm"}, "spec": {"template": {"spec": {"domain": {"devices": {}}}}}});
/// api::kubevirt::defaults::default_vm(&mut vm);
/// assert!(vm["spec"]["template"]["spec"]["domain"]["machine"]["type"].is_string());
/// ```
pub fn default_vm(obj: &mut Value) {
    apply_typed::<VirtualMachine>(obj, |vm| {
        if let Some(spec) = vm.spec.template.as_mut().and_then(|t| t.spec.as_mut()) {
            set_architecture(spec);
            set_machine_type(spec);
        }
    });
}

/// Defaults a VirtualMachineInstance object in place, as KubeVirt does on VMI creation.
///
/// ```
/// let mut vmi = serde_json::json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
///     "metadata": {"name": "vmi"}, "spec": {"domain": {"devices": {"disks": [{"name": "root"}]},
///     "resources": {"requests": {"memory": "128Mi"}}},
///     "volumes": [{"name": "root", "containerDisk": {"image": "cirros"}}]}});
/// api::kubevirt::defaults::default_vmi(&mut vmi);
/// let spec = &vmi["spec"];
/// assert_eq!(spec["domain"]["devices"]["disks"][0]["disk"]["bus"], "virtio");
/// assert_eq!(spec["domain"]["devices"]["interfaces"][0]["masquerade"], serde_json::json!({}));
/// assert_eq!(spec["networks"][0]["pod"], serde_json::json!({}));
/// assert_eq!(spec["domain"]["memory"]["guest"], "128Mi");
/// assert_eq!(spec["domain"]["cpu"]["sockets"], 1);
/// ```
pub fn default_vmi(obj: &mut Value) {
    apply_typed::<VirtualMachineInstance>(obj, |vmi| {
        default_vmi_spec(&mut vmi.spec);
        let status = vmi.status.get_or_insert_with(Default::default);
        if let Some(guest) = vmi
            .spec
            .domain
            .memory
            .as_ref()
            .and_then(|m| m.guest.clone())
        {
            status.memory.get_or_insert(MemoryStatus {
                guest_at_boot: Some(guest.clone()),
                guest_current: Some(guest.clone()),
                guest_requested: Some(guest),
            });
        }
        if let Some(cpu) = &vmi.spec.domain.cpu {
            status
                .current_cpu_topology
                .get_or_insert_with(|| CpuTopology::from(cpu));
        }
    });
}

/// The label KubeVirt puts on a migration, holding the VMI's name.
pub const MIGRATION_SELECTOR_LABEL: &str = "kubevirt.io/vmi-name";

/// Defaults a VirtualMachineInstanceMigration: KubeVirt's migration mutator labels it with
/// the VMI's name. (KubeVirt also adds the `kubevirt.io/migrationJobFinalize` finalizer; it is
/// left to the migration controller to add and remove, so that a migration can always be
/// deleted while no controller runs.)
///
/// ```
/// let mut m = serde_json::json!({"metadata": {"name": "m"}, "spec": {"vmiName": "vmi-fedora"}});
/// api::kubevirt::defaults::default_migration(&mut m);
/// assert_eq!(m["metadata"]["labels"]["kubevirt.io/vmi-name"], "vmi-fedora");
/// ```
pub fn default_migration(obj: &mut Value) {
    let Some(vmi) = obj
        .pointer("/spec/vmiName")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return;
    };
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    let meta = map
        .entry("metadata")
        .or_insert_with(|| serde_json::json!({}));
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    let labels = meta
        .entry("labels")
        .or_insert_with(|| serde_json::json!({}));
    if labels.is_null() {
        *labels = serde_json::json!({});
    }
    if let Some(l) = labels.as_object_mut() {
        l.insert(MIGRATION_SELECTOR_LABEL.into(), Value::from(vmi));
    }
}

/// Applies KubeVirt's VMI spec defaults (`SetDefaultVirtualMachineInstanceSpec` and
/// `SetObjectDefaults_VirtualMachineInstance`) to a typed spec.
pub fn default_vmi_spec(spec: &mut VirtualMachineInstanceSpec) {
    set_architecture(spec);
    set_machine_type(spec);
    set_resource_requests(spec);
    set_guest_memory(spec);
    set_cpu_topology(spec);
    set_container_disk_pull_policies(spec);
    set_default_network_interface(spec);
    set_volume_disks(spec);
    spec.domain.firmware.get_or_insert_with(Default::default);
    spec.domain
        .features
        .get_or_insert_with(Unstructured::default);
    let arch = spec.architecture.clone().unwrap_or_default();
    for disk in &mut spec.domain.devices.disks {
        set_disk_device(disk, &arch);
    }
    for input in &mut spec.domain.devices.inputs {
        input.bus.get_or_insert_with(|| "usb".to_string());
        input.type_.get_or_insert_with(|| "tablet".to_string());
    }
    for probe in [spec.liveness_probe.as_mut(), spec.readiness_probe.as_mut()]
        .into_iter()
        .flatten()
    {
        set_probe_defaults(probe);
    }
    let cpu = spec.domain.cpu.get_or_insert_with(Cpu::default);
    if cpu.model.as_deref().unwrap_or("").is_empty() {
        cpu.model = Some(DEFAULT_CPU_MODEL.to_string());
    }
}

/// KubeVirt's `SetDefaults_Probe`: timeout 1s, period 10s, success 1, failure 3.
fn set_probe_defaults(probe: &mut Unstructured) {
    for (field, min_default) in [
        ("timeoutSeconds", 1),
        ("periodSeconds", 10),
        ("successThreshold", 1),
        ("failureThreshold", 3),
    ] {
        let current = probe.0.get(field).and_then(Value::as_i64).unwrap_or(0);
        if current < 1 {
            probe.0.insert(field.to_string(), Value::from(min_default));
        }
    }
}

fn set_architecture(spec: &mut VirtualMachineInstanceSpec) {
    if spec.architecture.as_deref().unwrap_or("").is_empty() {
        spec.architecture = Some(host_architecture().to_string());
    }
}

fn set_machine_type(spec: &mut VirtualMachineInstanceSpec) {
    let arch = spec.architecture.clone().unwrap_or_default();
    let machine = spec.domain.machine.get_or_insert_with(Machine::default);
    if machine.type_.as_deref().unwrap_or("").is_empty() {
        machine.type_ = Some(default_machine_type(&arch).to_string());
    }
}

fn is_zero(q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>) -> bool {
    q.and_then(|q| quantity::parse(&q.0).ok())
        .is_none_or(|p| p.is_zero())
}

fn set_resource_requests(spec: &mut VirtualMachineInstanceSpec) {
    let r = &mut spec.domain.resources;
    if !is_zero(r.limits.get("cpu")) && is_zero(r.requests.get("cpu")) {
        if let Some(limit) = r.limits.get("cpu").cloned() {
            r.requests.insert("cpu".to_string(), limit);
        }
    }
}

fn set_guest_memory(spec: &mut VirtualMachineInstanceSpec) {
    if spec
        .domain
        .memory
        .as_ref()
        .is_some_and(|m| m.guest.is_some())
    {
        return;
    }
    let requests = spec.domain.resources.requests.get("memory").cloned();
    let limits = spec.domain.resources.limits.get("memory").cloned();
    let memory = spec.domain.memory.get_or_insert_with(Memory::default);
    if !is_zero(requests.as_ref()) {
        memory.guest = requests;
    } else if !is_zero(limits.as_ref()) {
        memory.guest = limits;
    } else if let Some(size) = memory.hugepages.as_ref().and_then(|h| h.page_size.clone()) {
        if quantity::parse(&size).is_ok() {
            memory.guest = Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
                size,
            ));
        }
    }
}

fn set_cpu_topology(spec: &mut VirtualMachineInstanceSpec) {
    let unset = spec.domain.cpu.as_ref().is_none_or(|c| {
        c.cores.unwrap_or(0) == 0 && c.sockets.unwrap_or(0) == 0 && c.threads.unwrap_or(0) == 0
    });
    if !unset {
        return;
    }
    let resources = &spec.domain.resources;
    let from = resources
        .limits
        .get("cpu")
        .or_else(|| resources.requests.get("cpu"))
        .and_then(|q| quantity::parse(&q.0).ok())
        .map(|p| p.value());
    // KubeVirt takes `Quantity.Value()` (rounded up) of the CPU limit or request as sockets.
    let sockets = from
        .and_then(|v| u32::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(1);
    let cpu = spec.domain.cpu.get_or_insert_with(Cpu::default);
    cpu.sockets = Some(sockets);
    cpu.cores = Some(1);
    cpu.threads = Some(1);
}

fn set_container_disk_pull_policies(spec: &mut VirtualMachineInstanceSpec) {
    for v in &mut spec.volumes {
        if let Some(cd) = v.container_disk.as_mut() {
            if cd.image_pull_policy.as_deref().unwrap_or("").is_empty() {
                let latest = cd.image.ends_with(":latest") || !cd.image.contains([':', '@']);
                cd.image_pull_policy =
                    Some(if latest { "Always" } else { "IfNotPresent" }.to_string());
            }
        }
    }
}

fn set_default_network_interface(spec: &mut VirtualMachineInstanceSpec) {
    if spec.domain.devices.autoattach_pod_interface == Some(false) {
        return;
    }
    if !spec.networks.is_empty() || !spec.domain.devices.interfaces.is_empty() {
        return;
    }
    spec.domain.devices.interfaces = vec![Interface {
        name: "default".to_string(),
        masquerade: Some(Unstructured::default()),
        ..Interface::default()
    }];
    spec.networks = vec![Network {
        name: "default".to_string(),
        pod: Some(PodNetwork::default()),
        multus: None,
    }];
}

fn set_volume_disks(spec: &mut VirtualMachineInstanceSpec) {
    let mut named: Vec<String> = spec
        .domain
        .devices
        .disks
        .iter()
        .map(|d| d.name.clone())
        .collect();
    named.extend(
        spec.domain
            .devices
            .filesystems
            .iter()
            .filter_map(|f| f.0.get("name").and_then(Value::as_str).map(str::to_string)),
    );
    for v in &spec.volumes {
        if !named.contains(&v.name) {
            spec.domain.devices.disks.push(Disk {
                name: v.name.clone(),
                ..Disk::default()
            });
            named.push(v.name.clone());
        }
    }
}

fn set_disk_device(disk: &mut Disk, arch: &str) {
    if disk.disk.is_none() && disk.cdrom.is_none() && disk.lun.is_none() {
        disk.disk = Some(DiskTarget::default());
    }
    if let Some(d) = disk.disk.as_mut() {
        d.bus.get_or_insert_with(|| "virtio".to_string());
    }
    if let Some(c) = disk.cdrom.as_mut() {
        let CdromTarget {
            bus,
            readonly,
            tray,
        } = c;
        bus.get_or_insert_with(|| if arch == "amd64" { "sata" } else { "scsi" }.to_string());
        readonly.get_or_insert(true);
        tray.get_or_insert_with(|| "closed".to_string());
    }
    if let Some(l) = disk.lun.as_mut() {
        l.bus.get_or_insert_with(|| "scsi".to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vmi(spec: Value) -> Value {
        json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
               "metadata": {"name": "t"}, "spec": spec})
    }

    #[test]
    fn no_interface_when_autoattach_is_false() {
        let mut v = vmi(json!({"domain": {"devices": {"autoattachPodInterface": false}}}));
        default_vmi(&mut v);
        assert!(v["spec"]["domain"]["devices"].get("interfaces").is_none());
        assert!(v["spec"].get("networks").is_none());
    }

    #[test]
    fn explicit_interfaces_are_kept() {
        let mut v = vmi(
            json!({"domain": {"devices": {"interfaces": [{"name": "a", "bridge": {}}]}},
                               "networks": [{"name": "a", "multus": {"networkName": "br"}}]}),
        );
        default_vmi(&mut v);
        assert_eq!(
            v["spec"]["domain"]["devices"]["interfaces"],
            json!([{"name": "a", "bridge": {}}])
        );
    }

    #[test]
    fn cpu_topology_from_limits_and_kept_when_given() {
        let mut v =
            vmi(json!({"domain": {"devices": {}, "resources": {"limits": {"cpu": "2500m"}}}}));
        default_vmi(&mut v);
        let d = &v["spec"]["domain"];
        assert_eq!(d["cpu"]["sockets"], 3);
        assert_eq!(d["resources"]["requests"]["cpu"], "2500m");
        assert_eq!(d["cpu"]["model"], DEFAULT_CPU_MODEL);
        assert_eq!(
            v["status"]["currentCPUTopology"],
            json!({"cores": 1, "sockets": 3, "threads": 1})
        );

        let mut v = vmi(json!({"domain": {"devices": {}, "cpu": {"cores": 4}}}));
        default_vmi(&mut v);
        assert_eq!(
            v["spec"]["domain"]["cpu"],
            json!({"cores": 4, "model": "host-model"})
        );
    }

    #[test]
    fn disks_for_volumes_and_cdrom_defaults() {
        let mut v = vmi(
            json!({"domain": {"devices": {"disks": [{"name": "iso", "cdrom": {}}]}},
            "volumes": [{"name": "iso", "containerDisk": {"image": "r/iso:v1"}},
                        {"name": "ci", "cloudInitNoCloud": {"userData": "#cloud-config"}}]}),
        );
        default_vmi(&mut v);
        let disks = &v["spec"]["domain"]["devices"]["disks"];
        assert_eq!(disks[0]["cdrom"]["readonly"], true);
        assert_eq!(disks[0]["cdrom"]["tray"], "closed");
        assert_eq!(disks[1], json!({"name": "ci", "disk": {"bus": "virtio"}}));
        assert_eq!(
            v["spec"]["volumes"][0]["containerDisk"]["imagePullPolicy"],
            "IfNotPresent"
        );
    }

    #[test]
    fn unknown_fields_survive_defaulting() {
        let mut v = vmi(
            json!({"domain": {"devices": {"disks": [{"name": "d", "x-extra": 1}]}},
                               "futureField": {"a": 1}}),
        );
        default_vmi(&mut v);
        assert_eq!(v["spec"]["futureField"], json!({"a": 1}));
        assert_eq!(v["spec"]["domain"]["devices"]["disks"][0]["x-extra"], 1);
        assert_eq!(
            v["spec"]["domain"]["devices"]["disks"][0]["disk"]["bus"],
            "virtio"
        );
    }

    #[test]
    fn probes_get_kubevirt_defaults() {
        let mut v = vmi(json!({"domain": {"devices": {}},
            "readinessProbe": {"httpGet": {"port": 1500}, "periodSeconds": 20}}));
        default_vmi(&mut v);
        assert_eq!(
            v["spec"]["readinessProbe"],
            json!({"httpGet": {"port": 1500}, "periodSeconds": 20, "timeoutSeconds": 1,
                   "successThreshold": 1, "failureThreshold": 3})
        );
        assert!(v["spec"].get("livenessProbe").is_none());
    }

    #[test]
    fn no_grace_period_is_invented() {
        let mut v = vmi(json!({"domain": {"devices": {}}}));
        default_vmi(&mut v);
        assert!(v["spec"].get("terminationGracePeriodSeconds").is_none());
    }
}
