//! Semantic validation of VirtualMachines, VirtualMachineInstances and migrations, following
//! KubeVirt's validating webhook (`vmi-create-admitter`, `vms-admitter`): every problem is one
//! [`Cause`] with the full field path, e.g. `spec.template.spec.domain.devices.disks[0].name`.
//! Type and enum errors are found earlier, from the schema ([`crate::schema::type_errors`]).

use super::devices::Disk;
use super::migration::VirtualMachineInstanceMigration;
use super::virtualmachine::VirtualMachine;
use super::virtualmachineinstance::{VirtualMachineInstance, VirtualMachineInstanceSpec};
use super::volume::{CloudInitSource, Volume};
use crate::quantity;
use crate::status::Cause;
use crate::validation::{
    dns1123_label, dns1123_subdomain, duplicate, forbidden, invalid, invalid_label, invalid_unless,
    not_supported, parse_mac, required, unless_one_of,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The largest cloud-init user or network data given inline (KubeVirt's limit).
pub const CLOUD_INIT_MAX_LEN: usize = 2048;
/// The smallest guest memory KubeVirt accepts.
pub const MIN_GUEST_MEMORY: i64 = 1_000_000;
/// The most vCPUs a VMI may have.
pub const MAX_VCPUS: u64 = 512;

const DISK_BUSES: &[&str] = &["virtio", "sata", "scsi", "usb"];
const CACHE_MODES: &[&str] = &["none", "writethrough", "writeback"];
const IO_MODES: &[&str] = &["native", "threads"];
const HOST_DISK_TYPES: &[&str] = &["Disk", "DiskOrCreate"];
const PULL_POLICIES: &[&str] = &["Always", "Never", "IfNotPresent"];
const PROTOCOLS: &[&str] = &["TCP", "UDP"];
const NIC_MODELS: &[&str] = &[
    "e1000", "e1000e", "igb", "ne2k_pci", "pcnet", "rtl8139", "virtio",
];

fn path(base: &str, rest: &str) -> String {
    if base.is_empty() {
        rest.to_string()
    } else {
        format!("{base}.{rest}")
    }
}

/// Validates a VirtualMachine (already known to match the schema).
///
/// ```
/// use serde_json::json;
/// let causes = api::kubevirt::validation::validate_vm(&json!({
///     "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "vm"},
///     "spec": {"running": true, "runStrategy": "Always",
///              "template": {"spec": {"domain": {"devices": {"disks": [{"name": "root"}]},
///                                    "memory": {"guest": "64Mi"}}}}}}));
/// let fields: Vec<_> = causes.iter().map(|c| c.field.as_str()).collect();
/// assert_eq!(fields, ["spec.running", "spec.template.spec.domain.devices.disks[0].name"]);
/// ```
pub fn validate_vm(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    if obj.get("spec").is_none_or(Value::is_null) {
        return vec![Cause::required("spec")];
    }
    let vm: VirtualMachine = match crate::schema::decode(obj) {
        Ok(vm) => vm,
        Err(c) => return vec![c],
    };
    if vm.spec.running.is_some() && vm.spec.run_strategy.is_some() {
        causes.push(invalid(
            "spec.running",
            &Value::from(vm.spec.running.unwrap_or_default()),
            "Running and RunStrategy are mutually exclusive",
        ));
    }
    match vm.spec.template.as_ref().and_then(|t| t.spec.as_ref()) {
        None => causes.push(required(
            "spec.template",
            "missing virtual machine template",
        )),
        Some(spec) => {
            validate_template_metadata(
                vm.spec.template.as_ref().and_then(|t| t.metadata.as_ref()),
                &mut causes,
            );
            let memory_required = vm.spec.instancetype.is_none();
            validate_vmi_spec(spec, "spec.template.spec", memory_required, &mut causes);
        }
    }
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, t) in vm.spec.data_volume_templates.iter().enumerate() {
        let p = format!("spec.dataVolumeTemplates[{i}]");
        let name = t
            .metadata
            .as_ref()
            .and_then(|m| m.name.as_deref())
            .unwrap_or("");
        if name.is_empty() {
            causes.push(Cause::required(format!("{p}.metadata.name")));
            continue;
        }
        for e in dns1123_subdomain(name) {
            causes.push(invalid(
                format!("{p}.metadata.name"),
                &Value::from(name),
                &e,
            ));
        }
        if seen.insert(name, i).is_some() {
            causes.push(duplicate(format!("{p}.metadata.name"), name));
        }
        if let Some(want) = t.api_version.as_deref() {
            if !want.is_empty() && !want.starts_with("cdi.kubevirt.io/") {
                causes.push(not_supported(
                    format!("{p}.apiVersion"),
                    &Value::from(want),
                    &["cdi.kubevirt.io/v1beta1"],
                ));
            }
        }
        crate::cdi::validation::validate_dv_spec(&t.spec, &format!("{p}.spec"), &mut causes);
    }
    causes
}

/// Validates a VirtualMachineInstance (already known to match the schema).
pub fn validate_vmi(obj: &Value) -> Vec<Cause> {
    if obj.get("spec").is_none_or(Value::is_null) {
        return vec![Cause::required("spec")];
    }
    let vmi: VirtualMachineInstance = match crate::schema::decode(obj) {
        Ok(v) => v,
        Err(c) => return vec![c],
    };
    let mut causes = Vec::new();
    validate_vmi_spec(&vmi.spec, "spec", true, &mut causes);
    causes
}

/// Validates a VirtualMachineInstanceMigration.
pub fn validate_migration(obj: &Value) -> Vec<Cause> {
    let m: VirtualMachineInstanceMigration = match crate::schema::decode(obj) {
        Ok(m) => m,
        Err(c) => return vec![c],
    };
    let mut causes = Vec::new();
    if m.spec.vmi_name.is_empty() {
        causes.push(Cause::required("spec.vmiName"));
    } else {
        for e in dns1123_subdomain(&m.spec.vmi_name) {
            causes.push(invalid(
                "spec.vmiName",
                &Value::from(m.spec.vmi_name.as_str()),
                &e,
            ));
        }
    }
    causes
}

fn check_quantity(
    q: Option<&Quantity>,
    field: String,
    causes: &mut Vec<Cause>,
) -> Option<quantity::ParsedQuantity> {
    let q = q?;
    match quantity::parse(&q.0) {
        Ok(p) if p.is_negative() => {
            causes.push(invalid(
                field,
                &Value::from(q.0.as_str()),
                "must be greater than or equal to 0",
            ));
            None
        }
        Ok(p) => Some(p),
        Err(e) => {
            causes.push(invalid(field, &Value::from(q.0.as_str()), &e.to_string()));
            None
        }
    }
}

/// The labels and annotations the VM gives its VMIs must be valid on a VMI.
fn validate_template_metadata(meta: Option<&ObjectMeta>, causes: &mut Vec<Cause>) {
    let Some(meta) = meta else {
        return;
    };
    for (k, v) in meta.labels.iter().flatten() {
        for e in crate::validation::qualified_name(k) {
            causes.push(invalid(
                "spec.template.metadata.labels",
                &Value::from(k.as_str()),
                &e,
            ));
        }
        for e in crate::validation::label_value(v) {
            causes.push(invalid(
                format!("spec.template.metadata.labels.{k}"),
                &Value::from(v.as_str()),
                &e,
            ));
        }
    }
    for k in meta.annotations.iter().flatten().map(|(k, _)| k) {
        for e in crate::validation::qualified_name(k) {
            causes.push(invalid(
                "spec.template.metadata.annotations",
                &Value::from(k.as_str()),
                &e,
            ));
        }
    }
}

/// Validates a VMI spec found at `base` (`spec` or `spec.template.spec`). `memory_required`
/// is false for a VM whose instancetype provides the memory.
pub fn validate_vmi_spec(
    spec: &VirtualMachineInstanceSpec,
    base: &str,
    memory_required: bool,
    causes: &mut Vec<Cause>,
) {
    let domain = path(base, "domain");
    validate_resources(spec, base, memory_required, causes);
    validate_cpu(spec, &domain, causes);
    validate_firmware(spec, &domain, causes);

    let volume_names = validate_volumes(&spec.volumes, base, causes);
    let mut boot_orders: BTreeMap<u32, String> = BTreeMap::new();
    validate_disks(
        &spec.domain.devices.disks,
        &domain,
        &volume_names,
        &mut boot_orders,
        causes,
    );
    validate_networks(spec, base, &mut boot_orders, causes);

    if let Some(t) = spec.termination_grace_period_seconds {
        if t < 0 {
            causes.push(invalid(
                path(base, "terminationGracePeriodSeconds"),
                &Value::from(t),
                "must be greater than or equal to 0",
            ));
        }
    }
    if let Some(h) = spec.hostname.as_deref().filter(|h| !h.is_empty()) {
        causes.extend(invalid_label(path(base, "hostname"), h));
    }
    if let Some(s) = spec.subdomain.as_deref().filter(|s| !s.is_empty()) {
        causes.extend(invalid_label(path(base, "subdomain"), s));
    }
    if let Some(s) = spec.start_strategy.as_deref() {
        if s != "Paused" {
            causes.push(not_supported(
                path(base, "startStrategy"),
                &Value::from(s),
                &["Paused"],
            ));
        }
    }
    if let Some(a) = spec.architecture.as_deref().filter(|a| !a.is_empty()) {
        let known = ["amd64", "arm64", "s390x", "ppc64le"];
        causes.extend(unless_one_of(path(base, "architecture"), Some(a), &known));
    }
    for (k, v) in &spec.node_selector {
        for e in crate::validation::qualified_name(k) {
            causes.push(invalid(
                path(base, "nodeSelector"),
                &Value::from(k.as_str()),
                &e,
            ));
        }
        for e in crate::validation::label_value(v) {
            causes.push(invalid(
                path(base, &format!("nodeSelector.{k}")),
                &Value::from(v.as_str()),
                &e,
            ));
        }
    }
}

fn validate_resources(
    spec: &VirtualMachineInstanceSpec,
    base: &str,
    memory_required: bool,
    causes: &mut Vec<Cause>,
) {
    let r = &spec.domain.resources;
    let res = path(base, "domain.resources");
    let mut parsed = BTreeMap::new();
    for (kind, list) in [("requests", &r.requests), ("limits", &r.limits)] {
        for (name, q) in list {
            if let Some(p) = check_quantity(Some(q), format!("{res}.{kind}.{name}"), causes) {
                parsed.insert((kind, name.as_str()), p);
            }
        }
    }
    for name in ["cpu", "memory"] {
        if let (Some(req), Some(lim)) = (
            parsed.get(&("requests", name)),
            parsed.get(&("limits", name)),
        ) {
            if req > lim {
                causes.push(invalid(
                    format!("{res}.requests.{name}"),
                    &Value::from(r.requests[name].0.as_str()),
                    &format!(
                        "must be less than or equal to {name} limit of {}",
                        r.limits[name].0
                    ),
                ));
            }
        }
    }
    if let Some(req) = parsed.get(&("requests", "memory")) {
        if req.value() < MIN_GUEST_MEMORY {
            causes.push(invalid(
                format!("{res}.requests.memory"),
                &Value::from(r.requests["memory"].0.as_str()),
                "must be greater than or equal to 1M",
            ));
        }
    }
    let memory = spec.domain.memory.as_ref();
    let mem_path = path(base, "domain.memory");
    let guest = check_quantity(
        memory.and_then(|m| m.guest.as_ref()),
        format!("{mem_path}.guest"),
        causes,
    );
    check_quantity(
        memory.and_then(|m| m.max_guest.as_ref()),
        format!("{mem_path}.maxGuest"),
        causes,
    );
    if let Some(g) = guest {
        if g.value() < MIN_GUEST_MEMORY {
            let v = memory
                .and_then(|m| m.guest.as_ref())
                .map(|q| q.0.as_str())
                .unwrap_or("");
            causes.push(invalid(
                format!("{mem_path}.guest"),
                &Value::from(v),
                "must be greater than or equal to 1M",
            ));
        }
        if let Some(lim) = parsed.get(&("limits", "memory")) {
            if g > *lim {
                let v = memory
                    .and_then(|m| m.guest.as_ref())
                    .map(|q| q.0.as_str())
                    .unwrap_or("");
                causes.push(invalid(
                    format!("{mem_path}.guest"),
                    &Value::from(v),
                    &format!(
                        "must be equal to or less than the memory limit {}",
                        r.limits["memory"].0
                    ),
                ));
            }
        }
    }
    if let Some(size) = memory
        .and_then(|m| m.hugepages.as_ref())
        .and_then(|h| h.page_size.as_deref())
    {
        if quantity::parse(size).is_err() {
            causes.push(invalid(
                format!("{mem_path}.hugepages.pageSize"),
                &Value::from(size),
                "must be a quantity such as 2Mi or 1Gi",
            ));
        }
    }
    let has_memory = r.requests.contains_key("memory")
        || r.limits.contains_key("memory")
        || memory.is_some_and(|m| m.guest.is_some() || m.hugepages.is_some());
    if memory_required && !has_memory {
        causes.push(required(
            format!("{res}.requests.memory"),
            &format!("no memory requested, at least one of '{mem_path}.guest', '{mem_path}.hugepages.pageSize' or '{res}.requests.memory' must be set"),
        ));
    }
}

fn validate_cpu(spec: &VirtualMachineInstanceSpec, domain: &str, causes: &mut Vec<Cause>) {
    let Some(cpu) = &spec.domain.cpu else {
        return;
    };
    for (name, v) in [
        ("cores", cpu.cores),
        ("sockets", cpu.sockets),
        ("threads", cpu.threads),
    ] {
        if v == Some(0) {
            causes.push(invalid(
                format!("{domain}.cpu.{name}"),
                &Value::from(0),
                "must be greater than or equal to 1",
            ));
        }
    }
    if cpu.vcpus() > MAX_VCPUS {
        causes.push(invalid(
            format!("{domain}.cpu"),
            &Value::from(cpu.vcpus()),
            &format!("the number of vCPUs (sockets * cores * threads) must not exceed {MAX_VCPUS}"),
        ));
    }
    if let (Some(max), Some(s)) = (cpu.max_sockets, cpu.sockets) {
        if max != 0 && max < s {
            causes.push(invalid(
                format!("{domain}.cpu.maxSockets"),
                &Value::from(max),
                "must be greater than or equal to sockets",
            ));
        }
    }
    let mut names = BTreeSet::new();
    for (i, f) in cpu.features.iter().enumerate() {
        let p = format!("{domain}.cpu.features[{i}].name");
        if f.name.is_empty() {
            causes.push(Cause::required(p));
        } else if !names.insert(f.name.as_str()) {
            causes.push(duplicate(p, &f.name));
        }
    }
    if cpu.isolate_emulator_thread == Some(true) && cpu.dedicated_cpu_placement != Some(true) {
        causes.push(forbidden(
            format!("{domain}.cpu.isolateEmulatorThread"),
            "isolateEmulatorThread requires dedicatedCpuPlacement",
        ));
    }
}

fn validate_firmware(spec: &VirtualMachineInstanceSpec, domain: &str, causes: &mut Vec<Cause>) {
    let Some(fw) = &spec.domain.firmware else {
        return;
    };
    let p = format!("{domain}.firmware");
    if let Some(b) = &fw.bootloader {
        if b.bios.is_some() && b.efi.is_some() {
            causes.push(forbidden(
                format!("{p}.bootloader"),
                "only one of bios and efi may be set",
            ));
        }
    }
    if let Some(kb) = &fw.kernel_boot {
        let kp = format!("{p}.kernelBoot");
        match &kb.container {
            None => {
                if kb.kernel_args.as_deref().is_some_and(|a| !a.is_empty()) {
                    causes.push(forbidden(
                        format!("{kp}.kernelArgs"),
                        "kernelArgs can only be provided with a container",
                    ));
                }
            }
            Some(c) => {
                if c.image.is_empty() {
                    causes.push(Cause::required(format!("{kp}.container.image")));
                }
                let empty = |s: &Option<String>| s.as_deref().unwrap_or("").is_empty();
                if empty(&c.kernel_path) && empty(&c.initrd_path) {
                    causes.push(required(
                        format!("{kp}.container"),
                        "at least one of kernelPath and initrdPath must be set",
                    ));
                }
                for (name, v) in [
                    ("kernelPath", &c.kernel_path),
                    ("initrdPath", &c.initrd_path),
                ] {
                    causes.extend(invalid_unless(
                        format!("{kp}.container.{name}"),
                        v.as_deref(),
                        |v| v.is_empty() || v.starts_with('/'),
                        "must be an absolute path",
                    ));
                }
                causes.extend(unless_one_of(
                    format!("{kp}.container.imagePullPolicy"),
                    c.image_pull_policy.as_deref(),
                    PULL_POLICIES,
                ));
            }
        }
    }
}

fn validate_cloud_init(ci: &CloudInitSource, p: &str, causes: &mut Vec<Cause>) {
    let set = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
    let user = [
        set(&ci.user_data),
        set(&ci.user_data_base64),
        ci.secret_ref.is_some(),
    ];
    let network = [
        set(&ci.network_data),
        set(&ci.network_data_base64),
        ci.network_data_secret_ref.is_some(),
    ];
    let users = user.iter().filter(|b| **b).count();
    let networks = network.iter().filter(|b| **b).count();
    if users == 0 && networks == 0 {
        causes.push(required(p.to_string(), "must have one of userData, userDataBase64, secretRef, networkData, networkDataBase64 or networkDataSecretRef"));
    }
    if users > 1 {
        causes.push(forbidden(
            p.to_string(),
            "only one of userData, userDataBase64 and secretRef may be set",
        ));
    }
    if networks > 1 {
        causes.push(forbidden(
            p.to_string(),
            "only one of networkData, networkDataBase64 and networkDataSecretRef may be set",
        ));
    }
    for (name, v) in [
        ("userData", &ci.user_data),
        ("userDataBase64", &ci.user_data_base64),
        ("networkData", &ci.network_data),
        ("networkDataBase64", &ci.network_data_base64),
    ] {
        if let Some(v) = v.as_deref() {
            if v.len() > CLOUD_INIT_MAX_LEN {
                causes.push(Cause::new(
                    "FieldValueTooLong",
                    format!("{p}.{name}"),
                    format!(
                        "Too long: {name} exceeds {CLOUD_INIT_MAX_LEN} byte limit; use a secretRef"
                    ),
                ));
            }
        }
    }
    for (name, r) in [
        ("secretRef", &ci.secret_ref),
        ("networkDataSecretRef", &ci.network_data_secret_ref),
    ] {
        if let Some(r) = r {
            if r.name.is_empty() {
                causes.push(Cause::required(format!("{p}.{name}.name")));
            }
        }
    }
}

/// Validates volumes; returns the set of volume names.
fn validate_volumes(volumes: &[Volume], base: &str, causes: &mut Vec<Cause>) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, v) in volumes.iter().enumerate() {
        let p = path(base, &format!("volumes[{i}]"));
        if v.name.is_empty() {
            causes.push(Cause::required(format!("{p}.name")));
        } else {
            causes.extend(invalid_label(format!("{p}.name"), &v.name));
            if !names.insert(v.name.clone()) {
                causes.push(duplicate(format!("{p}.name"), &v.name));
            }
        }
        let sources = v.sources();
        match sources.len() {
            0 => causes.push(required(p.clone(), "must have exactly one source type set (containerDisk, dataVolume, persistentVolumeClaim, cloudInitNoCloud, ...)")),
            1 => {}
            _ => causes.push(forbidden(p.clone(), &format!("must have exactly one source type set, found {}", sources.join(", ")))),
        }
        if let Some(cd) = &v.container_disk {
            if cd.image.is_empty() {
                causes.push(Cause::required(format!("{p}.containerDisk.image")));
            }
            causes.extend(unless_one_of(
                format!("{p}.containerDisk.imagePullPolicy"),
                cd.image_pull_policy.as_deref(),
                PULL_POLICIES,
            ));
        }
        if let Some(pvc) = &v.persistent_volume_claim {
            if pvc.claim_name.is_empty() {
                causes.push(Cause::required(format!(
                    "{p}.persistentVolumeClaim.claimName"
                )));
            }
        }
        if let Some(dv) = &v.data_volume {
            if dv.name.is_empty() {
                causes.push(Cause::required(format!("{p}.dataVolume.name")));
            }
        }
        if let Some(ci) = &v.cloud_init_no_cloud {
            validate_cloud_init(ci, &format!("{p}.cloudInitNoCloud"), causes);
        }
        if let Some(ci) = &v.cloud_init_config_drive {
            validate_cloud_init(ci, &format!("{p}.cloudInitConfigDrive"), causes);
        }
        if let Some(ed) = &v.empty_disk {
            let f = format!("{p}.emptyDisk.capacity");
            if ed.capacity.0.is_empty() {
                causes.push(Cause::required(f));
            } else if let Some(q) = check_quantity(Some(&ed.capacity), f.clone(), causes) {
                if q.is_zero() {
                    causes.push(invalid(
                        f,
                        &Value::from(ed.capacity.0.as_str()),
                        "must be greater than 0",
                    ));
                }
            }
        }
        if let Some(hd) = &v.host_disk {
            let hp = format!("{p}.hostDisk");
            if hd.path.is_empty() {
                causes.push(Cause::required(format!("{hp}.path")));
            } else if !hd.path.starts_with('/') {
                causes.push(invalid(
                    format!("{hp}.path"),
                    &Value::from(hd.path.as_str()),
                    "must be an absolute path",
                ));
            }
            causes.extend(unless_one_of(
                format!("{hp}.type"),
                Some(&hd.type_),
                HOST_DISK_TYPES,
            ));
            let cap = check_quantity(hd.capacity.as_ref(), format!("{hp}.capacity"), causes);
            if hd.type_ == "DiskOrCreate"
                && cap.is_none_or(|c| c.is_zero())
                && hd.capacity.is_none()
            {
                causes.push(required(
                    format!("{hp}.capacity"),
                    "capacity is required for type DiskOrCreate",
                ));
            }
        }
    }
    names
}

fn check_boot_order(
    order: Option<u32>,
    field: String,
    boot_orders: &mut BTreeMap<u32, String>,
    causes: &mut Vec<Cause>,
) {
    let Some(o) = order else {
        return;
    };
    if o == 0 {
        causes.push(invalid(
            field,
            &Value::from(0),
            "must have a boot order > 0, if supplied",
        ));
    } else if let Some(other) = boot_orders.get(&o) {
        causes.push(invalid(
            field,
            &Value::from(o),
            &format!("Boot order for {other} already set for a different device."),
        ));
    } else {
        boot_orders.insert(o, field);
    }
}

fn validate_disks(
    disks: &[Disk],
    domain: &str,
    volume_names: &BTreeSet<String>,
    boot_orders: &mut BTreeMap<u32, String>,
    causes: &mut Vec<Cause>,
) {
    let mut names = BTreeSet::new();
    for (i, d) in disks.iter().enumerate() {
        let p = format!("{domain}.devices.disks[{i}]");
        if d.name.is_empty() {
            causes.push(Cause::required(format!("{p}.name")));
        } else {
            if !names.insert(d.name.as_str()) {
                causes.push(duplicate(format!("{p}.name"), &d.name));
            }
            if !volume_names.contains(&d.name) {
                causes.push(invalid(
                    format!("{p}.name"),
                    &Value::from(d.name.as_str()),
                    &format!("{p}.name '{}' not found in volumes", d.name),
                ));
            }
        }
        let targets = [d.disk.is_some(), d.cdrom.is_some(), d.lun.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if targets > 1 {
            causes.push(forbidden(
                p.clone(),
                "only one of disk, cdrom and lun may be set",
            ));
        }
        for (kind, bus) in [
            ("disk", d.disk.as_ref().and_then(|t| t.bus.as_deref())),
            ("cdrom", d.cdrom.as_ref().and_then(|t| t.bus.as_deref())),
            ("lun", d.lun.as_ref().and_then(|t| t.bus.as_deref())),
        ] {
            if let Some(bus) = bus {
                let f = format!("{p}.{kind}.bus");
                if !DISK_BUSES.contains(&bus) {
                    causes.push(not_supported(f, &Value::from(bus), DISK_BUSES));
                } else if kind == "cdrom" && bus == "virtio" {
                    causes.push(invalid(
                        f,
                        &Value::from(bus),
                        "Bus type virtio is invalid for CD-ROM device",
                    ));
                }
            }
        }
        causes.extend(unless_one_of(
            format!("{p}.cdrom.tray"),
            d.cdrom.as_ref().and_then(|c| c.tray.as_deref()),
            &["open", "closed"],
        ));
        check_boot_order(d.boot_order, format!("{p}.bootOrder"), boot_orders, causes);
        causes.extend(invalid_unless(
            format!("{p}.serial"),
            d.serial.as_deref(),
            |serial| {
                serial.len() <= 36
                    && !serial.is_empty()
                    && serial.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'+' | b'-')
                    })
            },
            "must be 1 to 36 characters of [A-Za-z0-9_.+-]",
        ));
        causes.extend(unless_one_of(
            format!("{p}.cache"),
            d.cache.as_deref(),
            CACHE_MODES,
        ));
        causes.extend(unless_one_of(format!("{p}.io"), d.io.as_deref(), IO_MODES));
        causes.extend(invalid_unless(
            format!("{p}.disk.pciAddress"),
            d.disk.as_ref().and_then(|t| t.pci_address.as_deref()),
            is_pci_address,
            "must be a PCI address such as 0000:81:01.0",
        ));
    }
}

fn is_pci_address(s: &str) -> bool {
    let parts: Vec<&str> = s.split([':', '.']).collect();
    let hex = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit());
    parts.len() == 4
        && hex(parts[0], 4)
        && hex(parts[1], 2)
        && hex(parts[2], 2)
        && parts[3].len() == 1
        && parts[3].bytes().all(|b| (b'0'..=b'7').contains(&b))
}

fn is_cidr(s: &str, v6: bool) -> bool {
    let Some((addr, len)) = s.split_once('/') else {
        return false;
    };
    let Ok(len) = len.parse::<u8>() else {
        return false;
    };
    if v6 {
        addr.parse::<std::net::Ipv6Addr>().is_ok() && len <= 128
    } else {
        addr.parse::<std::net::Ipv4Addr>().is_ok() && len <= 32
    }
}

fn validate_networks(
    spec: &VirtualMachineInstanceSpec,
    base: &str,
    boot_orders: &mut BTreeMap<u32, String>,
    causes: &mut Vec<Cause>,
) {
    let mut networks: BTreeMap<&str, (usize, bool)> = BTreeMap::new();
    let mut pod_networks = 0;
    let mut multus_defaults = 0;
    for (i, n) in spec.networks.iter().enumerate() {
        let p = path(base, &format!("networks[{i}]"));
        if n.name.is_empty() {
            causes.push(Cause::required(format!("{p}.name")));
        } else {
            causes.extend(invalid_label(format!("{p}.name"), &n.name));
            if networks
                .insert(n.name.as_str(), (i, n.pod.is_some()))
                .is_some()
            {
                causes.push(duplicate(format!("{p}.name"), &n.name));
            }
        }
        match (n.pod.is_some(), n.multus.as_ref()) {
            (false, None) => causes.push(required(
                p.clone(),
                "should have a network type (pod or multus)",
            )),
            (true, Some(_)) => {
                causes.push(forbidden(p.clone(), "should have only one network type"))
            }
            (true, None) => {
                pod_networks += 1;
                if let Some(pod) = &n.pod {
                    for (name, cidr, v6) in [
                        ("vmNetworkCIDR", &pod.vm_network_cidr, false),
                        ("vmIPv6NetworkCIDR", &pod.vm_ipv6_network_cidr, true),
                    ] {
                        let family = if v6 { "IPv6" } else { "IPv4" };
                        causes.extend(invalid_unless(
                            format!("{p}.pod.{name}"),
                            cidr.as_deref(),
                            |c| c.is_empty() || is_cidr(c, v6),
                            &format!("must be an {family} CIDR"),
                        ));
                    }
                }
            }
            (false, Some(m)) => {
                if m.network_name.is_empty() {
                    causes.push(Cause::required(format!("{p}.multus.networkName")));
                } else {
                    let (ns, name) = m
                        .network_name
                        .split_once('/')
                        .unwrap_or(("", m.network_name.as_str()));
                    if !ns.is_empty() && !dns1123_label(ns).is_empty()
                        || !dns1123_subdomain(name).is_empty()
                    {
                        causes.push(invalid(format!("{p}.multus.networkName"), &Value::from(m.network_name.as_str()), "must be a NetworkAttachmentDefinition name, optionally prefixed by its namespace and '/'"));
                    }
                }
                if m.default == Some(true) {
                    multus_defaults += 1;
                }
            }
        }
    }
    if pod_networks > 1 {
        causes.push(forbidden(
            path(base, "networks"),
            "more than one pod network is not allowed",
        ));
    }
    if multus_defaults > 1 {
        causes.push(forbidden(
            path(base, "networks"),
            "more than one multus network is marked as default",
        ));
    }
    if pod_networks > 0 && multus_defaults > 0 {
        causes.push(forbidden(
            path(base, "networks"),
            "a pod network and a default multus network cannot be used together",
        ));
    }

    let domain = path(base, "domain");
    let mut iface_names = BTreeSet::new();
    let mut macs: BTreeMap<[u8; 6], String> = BTreeMap::new();
    for (i, iface) in spec.domain.devices.interfaces.iter().enumerate() {
        let p = format!("{domain}.devices.interfaces[{i}]");
        let network = networks.get(iface.name.as_str());
        if iface.name.is_empty() {
            causes.push(Cause::required(format!("{p}.name")));
        } else {
            if !iface_names.insert(iface.name.as_str()) {
                causes.push(duplicate(format!("{p}.name"), &iface.name));
            }
            if network.is_none() {
                causes.push(invalid(
                    format!("{p}.name"),
                    &Value::from(iface.name.as_str()),
                    &format!("{p}.name '{}' not found in networks", iface.name),
                ));
            }
        }
        let bindings = iface.bindings();
        if bindings.len() > 1 {
            causes.push(forbidden(
                p.clone(),
                &format!("only one binding may be set, found {}", bindings.join(", ")),
            ));
        }
        if let Some(&(_, is_pod)) = network {
            if iface.masquerade.is_some() && !is_pod {
                causes.push(forbidden(
                    format!("{p}.masquerade"),
                    "Masquerade interface only implemented with pod network",
                ));
            }
            if iface.sriov.is_some() && is_pod {
                causes.push(forbidden(
                    format!("{p}.sriov"),
                    "SRIOV interface is not supported on the pod network",
                ));
            }
        }
        causes.extend(unless_one_of(
            format!("{p}.model"),
            iface.model.as_deref(),
            NIC_MODELS,
        ));
        if let Some(mac) = iface.mac_address.as_deref().filter(|m| !m.is_empty()) {
            match parse_mac(mac) {
                None => causes.push(invalid(
                    format!("{p}.macAddress"),
                    &Value::from(mac),
                    "does not conform to MAC address format",
                )),
                Some(b) if b[0] & 1 == 1 => causes.push(invalid(
                    format!("{p}.macAddress"),
                    &Value::from(mac),
                    "must be a unicast MAC address",
                )),
                Some(b) => {
                    if macs.insert(b, format!("{p}.macAddress")).is_some() {
                        causes.push(duplicate(format!("{p}.macAddress"), mac));
                    }
                }
            }
        }
        if !iface.ports.is_empty()
            && iface.masquerade.is_none()
            && iface.slirp.is_none()
            && iface.passt.is_none()
        {
            causes.push(forbidden(
                format!("{p}.ports"),
                "port forwarding is only supported with masquerade, passt and slirp bindings",
            ));
        }
        let mut port_keys = BTreeSet::new();
        for (j, port) in iface.ports.iter().enumerate() {
            let pp = format!("{p}.ports[{j}]");
            if !(1..=65535).contains(&port.port) {
                causes.push(invalid(
                    format!("{pp}.port"),
                    &Value::from(port.port),
                    "must be between 1 and 65535",
                ));
            }
            let proto = port.protocol.as_deref().unwrap_or("TCP");
            causes.extend(unless_one_of(
                format!("{pp}.protocol"),
                Some(proto),
                PROTOCOLS,
            ));
            if !port_keys.insert((proto, port.port)) {
                causes.push(duplicate(format!("{pp}.port"), &port.port.to_string()));
            }
        }
        check_boot_order(
            iface.boot_order,
            format!("{p}.bootOrder"),
            boot_orders,
            causes,
        );
        causes.extend(unless_one_of(
            format!("{p}.state"),
            iface.state.as_deref(),
            &["up", "down", "absent"],
        ));
    }
    for (name, (i, _)) in &networks {
        if !iface_names.contains(name) {
            causes.push(invalid(
                path(base, &format!("networks[{i}].name")),
                &Value::from(*name),
                &format!(
                    "{}.name '{name}' not found in interfaces",
                    path(base, &format!("networks[{i}]"))
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vmi(spec: Value) -> Vec<Cause> {
        validate_vmi(
            &json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                             "metadata": {"name": "t"}, "spec": spec}),
        )
    }

    fn fields(c: &[Cause]) -> Vec<&str> {
        c.iter().map(|c| c.field.as_str()).collect()
    }

    const MEM: &str = "64Mi";

    #[test]
    fn boot_orders_are_unique_across_disks_and_interfaces() {
        let c = vmi(json!({
            "domain": {"resources": {"requests": {"memory": MEM}}, "devices": {
                "disks": [{"name": "a", "bootOrder": 1}, {"name": "b", "bootOrder": 0}],
                "interfaces": [{"name": "default", "masquerade": {}, "bootOrder": 1}]}},
            "networks": [{"name": "default", "pod": {}}],
            "volumes": [{"name": "a", "emptyDisk": {"capacity": "1Gi"}}, {"name": "b", "emptyDisk": {"capacity": "1Gi"}}]}));
        assert_eq!(
            fields(&c),
            [
                "spec.domain.devices.disks[1].bootOrder",
                "spec.domain.devices.interfaces[0].bootOrder"
            ]
        );
        assert!(c[1].message.contains("already set"));
    }

    #[test]
    fn network_rules() {
        let c = vmi(json!({
            "domain": {"resources": {"requests": {"memory": MEM}}, "devices": {"interfaces": [
                {"name": "default", "bridge": {}, "ports": [{"port": 80}]},
                {"name": "sec", "masquerade": {}, "macAddress": "03:00:00:00:00:01"},
                {"name": "third", "bridge": {}, "masquerade": {}}]}},
            "networks": [
                {"name": "default", "pod": {"vmNetworkCIDR": "10.0.2.0/33"}},
                {"name": "sec", "multus": {"networkName": ""}},
                {"name": "third", "multus": {"networkName": "ns/net"}},
                {"name": "lonely", "pod": {}}]}));
        assert_eq!(
            fields(&c),
            [
                "spec.networks[0].pod.vmNetworkCIDR",
                "spec.networks[1].multus.networkName",
                "spec.networks",
                "spec.domain.devices.interfaces[0].ports",
                "spec.domain.devices.interfaces[1].masquerade",
                "spec.domain.devices.interfaces[1].macAddress",
                "spec.domain.devices.interfaces[2]",
                "spec.domain.devices.interfaces[2].masquerade",
                "spec.networks[3].name",
            ]
        );
    }

    #[test]
    fn memory_cpu_and_firmware_rules() {
        let c = vmi(json!({
            "domain": {
                "resources": {"requests": {"memory": "2Gi", "cpu": "3"}, "limits": {"memory": "1Gi", "cpu": "2"}},
                "memory": {"guest": "4Gi"},
                "cpu": {"sockets": 16, "cores": 16, "threads": 4},
                "firmware": {"kernelBoot": {"kernelArgs": "console=ttyS0"},
                             "bootloader": {"bios": {}, "efi": {}}},
                "devices": {}}}));
        assert_eq!(
            fields(&c),
            [
                "spec.domain.resources.requests.cpu",
                "spec.domain.resources.requests.memory",
                "spec.domain.memory.guest",
                "spec.domain.cpu",
                "spec.domain.firmware.bootloader",
                "spec.domain.firmware.kernelBoot.kernelArgs",
            ]
        );
        let c = vmi(json!({"domain": {"devices": {}}}));
        assert_eq!(fields(&c), ["spec.domain.resources.requests.memory"]);
        assert_eq!(c[0].reason, "FieldValueRequired");
    }

    #[test]
    fn volume_source_rules() {
        let long = "x".repeat(CLOUD_INIT_MAX_LEN + 1);
        let c = vmi(json!({
            "domain": {"resources": {"requests": {"memory": MEM}}, "devices": {}},
            "volumes": [
                {"name": "ci", "cloudInitNoCloud": {"userData": long}},
                {"name": "host", "hostDisk": {"path": "relative.img", "type": "DiskOrCreate"}},
                {"name": "two", "containerDisk": {"image": "a"}, "emptyDisk": {"capacity": "1Gi"}},
                {"name": "pvc", "persistentVolumeClaim": {"claimName": ""}},
                {"name": "Bad_Name", "dataVolume": {"name": "dv"}},
                {"name": "ci2", "cloudInitConfigDrive": {}}]}));
        assert_eq!(
            fields(&c),
            [
                "spec.volumes[0].cloudInitNoCloud.userData",
                "spec.volumes[1].hostDisk.path",
                "spec.volumes[1].hostDisk.capacity",
                "spec.volumes[2]",
                "spec.volumes[3].persistentVolumeClaim.claimName",
                "spec.volumes[4].name",
                "spec.volumes[5].cloudInitConfigDrive",
            ]
        );
        assert_eq!(c[0].reason, "FieldValueTooLong");
    }

    #[test]
    fn an_instancetype_provides_memory() {
        let vm = |instancetype: Value| {
            validate_vm(
                &json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                "metadata": {"name": "vm"}, "spec": {"runStrategy": "Halted", "instancetype": instancetype,
                    "template": {"spec": {"domain": {"devices": {}}}}}}),
            )
        };
        assert!(vm(json!({"name": "u1.medium"})).is_empty());
        assert_eq!(
            fields(&vm(Value::Null)),
            ["spec.template.spec.domain.resources.requests.memory"]
        );
    }

    #[test]
    fn template_labels_are_checked() {
        let c = validate_vm(
            &json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "vm"}, "spec": {"runStrategy": "Halted", "template": {
                "metadata": {"labels": {"kubevirt.io/vm": "-bad-"}},
                "spec": {"domain": {"devices": {}, "memory": {"guest": MEM}}}}}}),
        );
        assert_eq!(fields(&c), ["spec.template.metadata.labels.kubevirt.io/vm"]);
    }
}
