//! KubeVirt-style manifests (the shapes of KubeVirt's and CDI's examples: a cirros VM, a
//! Fedora VMI, a VM with dataVolumeTemplates, a multus VM, a direct-kernel-boot VMI) run
//! through the registry exactly as the store does: schema types, unknown fields, defaults,
//! validation, typed round-trip, table cells.

use api::cdi::datavolume::DataVolume;
use api::kubevirt::virtualmachine::{RunStrategy, VirtualMachine};
use api::kubevirt::virtualmachineinstance::VirtualMachineInstance;
use api::resource::{find, find_kind, ResourceDef};
use serde_json::{json, Value};

fn vm_def() -> &'static ResourceDef {
    find("kubevirt.io", "v1", "virtualmachines").expect("VMs are served")
}

fn vmi_def() -> &'static ResourceDef {
    find("kubevirt.io", "v1", "virtualmachineinstances").expect("VMIs are served")
}

fn vm_cirros() -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"labels": {"kubevirt.io/vm": "vm-cirros"}, "name": "vm-cirros"},
        "spec": {
            "running": false,
            "template": {
                "metadata": {"labels": {"kubevirt.io/vm": "vm-cirros"}},
                "spec": {
                    "domain": {
                        "devices": {
                            "disks": [
                                {"disk": {"bus": "virtio"}, "name": "containerdisk"},
                                {"disk": {"bus": "virtio"}, "name": "cloudinitdisk"}
                            ]
                        },
                        "resources": {"requests": {"memory": "128Mi"}}
                    },
                    "terminationGracePeriodSeconds": 0,
                    "volumes": [
                        {"containerDisk": {"image": "registry.example/kubevirt/cirros-container-disk-demo:devel"},
                         "name": "containerdisk"},
                        {"cloudInitNoCloud": {"userData": "#!/bin/sh\n\necho 'printed from cloud-init userdata'\n"},
                         "name": "cloudinitdisk"}
                    ]
                }
            }
        }
    })
}

fn vmi_fedora() -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"labels": {"special": "vmi-fedora"}, "name": "vmi-fedora"},
        "spec": {
            "domain": {
                "devices": {
                    "disks": [
                        {"disk": {"bus": "virtio"}, "name": "containerdisk"},
                        {"disk": {"bus": "virtio"}, "name": "cloudinitdisk"}
                    ],
                    "interfaces": [{"masquerade": {}, "name": "default"}],
                    "rng": {}
                },
                "resources": {"requests": {"memory": "1024M"}}
            },
            "networks": [{"name": "default", "pod": {}}],
            "terminationGracePeriodSeconds": 0,
            "volumes": [
                {"containerDisk": {"image": "registry.example/containerdisks/fedora:40"}, "name": "containerdisk"},
                {"cloudInitNoCloud": {"userData": "#cloud-config\npassword: fedora\nchpasswd: { expire: False }\n"},
                 "name": "cloudinitdisk"}
            ]
        }
    })
}

fn vm_datavolume() -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"labels": {"kubevirt.io/vm": "vm-alpine-datavolume"}, "name": "vm-alpine-datavolume"},
        "spec": {
            "dataVolumeTemplates": [{
                "metadata": {"name": "alpine-dv"},
                "spec": {
                    "storage": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}},
                    "source": {"http": {"url": "https://images.example/alpine.qcow2"}}
                }
            }],
            "runStrategy": "Always",
            "template": {
                "metadata": {"labels": {"kubevirt.io/vm": "vm-alpine-datavolume"}},
                "spec": {
                    "domain": {
                        "cpu": {"cores": 2, "sockets": 1, "threads": 1, "model": "host-passthrough"},
                        "devices": {"disks": [{"disk": {"bus": "virtio"}, "name": "datavolumedisk1", "bootOrder": 1}]},
                        "memory": {"guest": "512Mi"},
                        "resources": {"requests": {"memory": "512Mi", "cpu": "500m"}}
                    },
                    "evictionStrategy": "LiveMigrate",
                    "nodeSelector": {"kubernetes.io/arch": "amd64"},
                    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "vms", "effect": "NoSchedule"}],
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [
                            {"key": "node-role.kubernetes.io/worker", "operator": "Exists"}]}]}}},
                    "terminationGracePeriodSeconds": 180,
                    "volumes": [{"dataVolume": {"name": "alpine-dv"}, "name": "datavolumedisk1"}]
                }
            }
        }
    })
}

fn vm_multus() -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "vm-multus"},
        "spec": {
            "runStrategy": "Manual",
            "template": {"spec": {
                "domain": {
                    "devices": {
                        "disks": [{"name": "rootdisk", "disk": {}}],
                        "interfaces": [
                            {"name": "default", "masquerade": {}, "ports": [{"port": 22}, {"name": "dns", "port": 53, "protocol": "UDP"}]},
                            {"name": "br1", "bridge": {}, "macAddress": "02:00:00:00:00:01", "model": "virtio"}
                        ]
                    },
                    "memory": {"guest": "256Mi"},
                    "clock": {"utc": {}, "timer": {"hpet": {"present": false}}},
                    "features": {"acpi": {}, "smm": {"enabled": true}}
                },
                "networks": [
                    {"name": "default", "pod": {}},
                    {"name": "br1", "multus": {"networkName": "default/br1"}}
                ],
                "volumes": [{"name": "rootdisk", "persistentVolumeClaim": {"claimName": "root-pvc"}}]
            }}
        }
    })
}

fn vmi_kernel_boot() -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": "vmi-kernel-boot"},
        "spec": {
            "domain": {
                "devices": {},
                "firmware": {"kernelBoot": {
                    "kernelArgs": "console=ttyS0",
                    "container": {"image": "registry.example/kernel-boot:devel",
                                  "kernelPath": "/boot/vmlinuz", "initrdPath": "/boot/initramfs"}}},
                "machine": {"type": "q35"},
                "resources": {"requests": {"memory": "256Mi"}}
            },
            "volumes": [
                {"name": "scratch", "emptyDisk": {"capacity": "1Gi"}},
                {"name": "host", "hostDisk": {"path": "/var/lib/monovirt/disk.img", "type": "DiskOrCreate", "capacity": "1Gi"}}
            ]
        }
    })
}

fn fields(causes: &[api::status::Cause]) -> Vec<&str> {
    causes.iter().map(|c| c.field.as_str()).collect()
}

fn all_valid() -> Vec<(&'static ResourceDef, Value)> {
    vec![
        (vm_def(), vm_cirros()),
        (vmi_def(), vmi_fedora()),
        (vm_def(), vm_datavolume()),
        (vm_def(), vm_multus()),
        (vmi_def(), vmi_kernel_boot()),
    ]
}

#[test]
fn examples_are_known_valid_and_stay_valid_after_defaults() {
    for (def, obj) in all_valid() {
        let name = obj["metadata"]["name"].clone();
        assert!(
            (def.unknown_fields)(&obj).is_empty(),
            "{name}: {:?}",
            (def.unknown_fields)(&obj)
        );
        assert!(
            api::validation::validate_metadata(def, &obj).is_empty(),
            "{name}"
        );
        assert_eq!((def.validate)(&obj), vec![], "{name}");
        let mut defaulted = obj.clone();
        (def.default)(&mut defaulted);
        assert!(
            (def.unknown_fields)(&defaulted).is_empty(),
            "{name} after defaults"
        );
        assert_eq!((def.validate)(&defaulted), vec![], "{name} after defaults");
    }
}

#[test]
fn examples_round_trip_through_the_types() {
    let vm: VirtualMachine = serde_json::from_value(vm_cirros()).expect("vm-cirros decodes");
    assert_eq!(serde_json::to_value(&vm).expect("encodes"), vm_cirros());
    assert_eq!(vm.spec.run_strategy(), RunStrategy::Halted);

    let vmi: VirtualMachineInstance =
        serde_json::from_value(vmi_fedora()).expect("vmi-fedora decodes");
    assert_eq!(serde_json::to_value(&vmi).expect("encodes"), vmi_fedora());
    assert_eq!(vmi.termination_grace_period_seconds(), 0);

    let vm: VirtualMachine = serde_json::from_value(vm_datavolume()).expect("dv VM decodes");
    assert_eq!(serde_json::to_value(&vm).expect("encodes"), vm_datavolume());
    assert_eq!(vm.spec.run_strategy(), RunStrategy::Always);
    let template = vm.spec.template.and_then(|t| t.spec).expect("template");
    assert_eq!(template.domain.cpu.expect("cpu").vcpus(), 2);
    assert_eq!(template.tolerations[0].key.as_deref(), Some("dedicated"));

    let vm: VirtualMachine = serde_json::from_value(vm_multus()).expect("multus VM decodes");
    assert_eq!(serde_json::to_value(&vm).expect("encodes"), vm_multus());

    let vmi: VirtualMachineInstance =
        serde_json::from_value(vmi_kernel_boot()).expect("kernel boot decodes");
    assert_eq!(
        serde_json::to_value(&vmi).expect("encodes"),
        vmi_kernel_boot()
    );
}

#[test]
fn vmi_defaults_match_kubevirt() {
    let mut vmi = vmi_fedora();
    (vmi_def().default)(&mut vmi);
    let spec = &vmi["spec"];
    assert_eq!(spec["domain"]["cpu"]["sockets"], 1);
    assert_eq!(spec["domain"]["cpu"]["cores"], 1);
    assert_eq!(spec["domain"]["cpu"]["threads"], 1);
    assert_eq!(spec["domain"]["cpu"]["model"], "host-model");
    assert_eq!(spec["domain"]["memory"]["guest"], "1024M");
    assert_eq!(
        spec["domain"]["machine"]["type"]
            .as_str()
            .map(str::is_empty),
        Some(false)
    );
    assert_eq!(
        spec["volumes"][0]["containerDisk"]["imagePullPolicy"],
        "IfNotPresent"
    );
    assert_eq!(spec["terminationGracePeriodSeconds"], 0);
    assert_eq!(vmi["status"]["memory"]["guestAtBoot"], "1024M");
    // The interfaces given are kept; nothing is added.
    assert_eq!(
        spec["domain"]["devices"]["interfaces"],
        json!([{"masquerade": {}, "name": "default"}])
    );
    assert_eq!(spec["domain"]["devices"]["rng"], json!({}));
}

#[test]
fn vm_defaults_only_touch_the_template_machine() {
    let mut vm = vm_cirros();
    (vm_def().default)(&mut vm);
    let template = &vm["spec"]["template"]["spec"];
    assert!(template["domain"]["machine"]["type"].is_string());
    assert!(template["architecture"].is_string());
    assert!(template["domain"].get("cpu").is_none());
    assert!(vm["spec"].get("runStrategy").is_none());
    assert_eq!(vm["spec"]["running"], false);
}

#[test]
fn invalid_vm_gets_one_cause_per_bad_field() {
    let mut vm = vm_multus();
    let spec = &mut vm["spec"];
    spec["running"] = json!(true);
    let t = &mut spec["template"]["spec"];
    t["domain"]["devices"]["disks"] = json!([
        {"name": "rootdisk"}, {"name": "rootdisk"}, {"name": "nosuchvolume", "cdrom": {"bus": "virtio"}}
    ]);
    t["domain"]["devices"]["interfaces"][1]["macAddress"] = json!("02:00:00:00:00");
    t["domain"]["devices"]["interfaces"]
        .as_array_mut()
        .expect("list")
        .push(json!({"name": "ghost", "bridge": {}}));
    t["domain"]["cpu"] = json!({"cores": 0});
    t["domain"]["memory"] = json!({"guest": "lots"});
    t["volumes"]
        .as_array_mut()
        .expect("list")
        .push(json!({"name": "empty"}));
    let causes = (vm_def().validate)(&vm);
    let p = "spec.template.spec";
    assert_eq!(
        fields(&causes),
        vec![
            "spec.running".to_string(),
            format!("{p}.domain.memory.guest"),
            format!("{p}.domain.cpu.cores"),
            format!("{p}.volumes[1]"),
            format!("{p}.domain.devices.disks[1].name"),
            format!("{p}.domain.devices.disks[2].name"),
            format!("{p}.domain.devices.disks[2].cdrom.bus"),
            format!("{p}.domain.devices.interfaces[1].macAddress"),
            format!("{p}.domain.devices.interfaces[2].name"),
        ]
    );
    assert_eq!(
        causes[0].message,
        "Invalid value: true: Running and RunStrategy are mutually exclusive"
    );
    assert_eq!(causes[4].reason, "FieldValueDuplicate");
    assert!(
        causes[5].message.contains("not found in volumes"),
        "{}",
        causes[5].message
    );
    assert!(causes[7].message.contains("MAC address"));
}

#[test]
fn disk_without_volume_is_named_by_full_path() {
    let mut vm = vm_cirros();
    vm["spec"]["template"]["spec"]["volumes"] =
        json!([{"name": "cloudinitdisk", "cloudInitNoCloud": {"userData": "x"}}]);
    let causes = (vm_def().validate)(&vm);
    assert_eq!(
        fields(&causes),
        vec!["spec.template.spec.domain.devices.disks[0].name"]
    );
    let err = api::status::ApiError::invalid("kubevirt.io", "VirtualMachine", "vm-cirros", causes);
    assert_eq!(err.code, 422);
    assert!(err.message.starts_with("VirtualMachine.kubevirt.io \"vm-cirros\" is invalid: spec.template.spec.domain.devices.disks[0].name: Invalid value: \"containerdisk\""));
}

#[test]
fn schema_type_and_enum_errors_come_first() {
    let mut vm = vm_cirros();
    vm["spec"]["running"] = json!("yes");
    let causes = (vm_def().validate)(&vm);
    assert_eq!(fields(&causes), vec!["spec.running"]);
    assert_eq!(
        causes[0].message,
        "Invalid value: \"string\": spec.running in body must be of type boolean: \"string\""
    );

    let mut vm = vm_datavolume();
    vm["spec"]["runStrategy"] = json!("Sometimes");
    let causes = (vm_def().validate)(&vm);
    assert_eq!(causes[0].reason, "FieldValueNotSupported");
    assert!(causes[0]
        .message
        .starts_with("Unsupported value: \"Sometimes\": supported values: \"Always\""));

    let mut vmi = vmi_fedora();
    vmi["spec"]["domain"]["cpu"] = json!({"cores": -1});
    let causes = (vmi_def().validate)(&vmi);
    assert_eq!(fields(&causes), vec!["spec.domain.cpu.cores"]);
}

#[test]
fn missing_spec_and_template() {
    let causes = (vm_def().validate)(
        &json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "x"}}),
    );
    assert_eq!(fields(&causes), vec!["spec"]);
    let causes = (vm_def().validate)(
        &json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "x"}, "spec": {"runStrategy": "Halted"}}),
    );
    assert_eq!(fields(&causes), vec!["spec.template"]);
}

#[test]
fn unknown_fields_are_reported_with_paths_but_free_form_fields_are_not() {
    let mut vm = vm_multus();
    vm["spec"]["foo"] = json!(1);
    vm["spec"]["template"]["spec"]["domain"]["devices"]["disks"][0]["bogus"] = json!(true);
    vm["metadata"]["labelz"] = json!({});
    let mut unknown = (vm_def().unknown_fields)(&vm);
    unknown.sort();
    assert_eq!(
        unknown,
        vec![
            "metadata.labelz",
            "spec.foo",
            "spec.template.spec.domain.devices.disks[0].bogus"
        ]
    );
    // clock, features and ports under the masquerade binding are part of the schema.
    assert!((vm_def().unknown_fields)(&vm_multus()).is_empty());
}

#[test]
fn datavolume_and_template_validation() {
    let dv_def = find_kind("cdi.kubevirt.io", "DataVolume").expect("DVs are served");
    let dv = json!({"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
        "metadata": {"name": "fedora"},
        "spec": {"source": {"registry": {"url": "docker://registry.example/fedora:40"}},
                 "pvc": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}}}}});
    assert!((dv_def.unknown_fields)(&dv).is_empty());
    assert_eq!((dv_def.validate)(&dv), vec![]);
    let typed: DataVolume = serde_json::from_value(dv.clone()).expect("decodes");
    assert_eq!(serde_json::to_value(&typed).expect("encodes"), dv);

    let bad = json!({"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume", "metadata": {"name": "b"},
        "spec": {"source": {"http": {"url": "https://x.example/a.img"}, "blank": {}},
                 "storage": {"resources": {"requests": {"storage": "0"}}}}});
    assert_eq!(
        fields(&(dv_def.validate)(&bad)),
        vec!["spec.source", "spec.storage.resources.requests.storage"]
    );

    let mut vm = vm_datavolume();
    vm["spec"]["dataVolumeTemplates"][0]["spec"]["source"] = json!({});
    vm["spec"]["dataVolumeTemplates"]
        .as_array_mut()
        .expect("list")
        .push(json!({"spec": {}}));
    assert_eq!(
        fields(&(vm_def().validate)(&vm)),
        vec![
            "spec.dataVolumeTemplates[0].spec.source",
            "spec.dataVolumeTemplates[1].metadata.name"
        ]
    );
}

#[test]
fn table_rows_for_vm_and_vmi() {
    let now = "2026-11-25T12:00:00Z".parse().expect("time");
    let mut vmi = vmi_fedora();
    vmi["metadata"]["creationTimestamp"] = json!("2026-11-25T11:56:48Z");
    vmi["status"] = json!({"phase": "Running", "nodeName": "node01",
        "interfaces": [{"ipAddress": "10.244.0.12", "ipAddresses": ["10.244.0.12"], "mac": "52:54:00:12:34:56",
                        "name": "default", "interfaceName": "eth0"}],
        "conditions": [{"type": "Ready", "status": "True"}, {"type": "LiveMigratable", "status": "False"}]});
    assert_eq!(
        api::table::cells(vmi_def(), &vmi, now),
        vec![
            json!("vmi-fedora"),
            json!("3m12s"),
            json!("Running"),
            json!("10.244.0.12"),
            json!("node01"),
            json!("True"),
            json!("False"),
            Value::Null
        ]
    );
    let cols: Vec<Value> = api::table::column_definitions(vmi_def())
        .iter()
        .map(|c| c["name"].clone())
        .collect();
    assert_eq!(
        cols,
        vec![
            "Name",
            "Age",
            "Phase",
            "IP",
            "NodeName",
            "Ready",
            "Live-Migratable",
            "Paused"
        ]
    );

    let vm = vm_cirros();
    assert_eq!(
        api::table::cells(vm_def(), &vm, now),
        vec![json!("vm-cirros"), Value::Null, Value::Null, Value::Null]
    );
}

#[test]
fn every_kind_has_a_consistent_registry_entry() {
    for def in api::resources() {
        let schema = (def.schema)();
        assert_eq!(schema["type"], "object", "{}", def.kind);
        for field in ["apiVersion", "kind", "metadata"] {
            assert!(
                schema["properties"][field].is_object(),
                "{} lacks {field}",
                def.kind
            );
        }
        let minimal =
            json!({"apiVersion": def.api_version(), "kind": def.kind, "metadata": {"name": "x"}});
        assert!((def.unknown_fields)(&minimal).is_empty(), "{}", def.kind);
        assert!(api::resource::find_name(def.plural).is_some());
        for s in def.short_names {
            assert_eq!(api::resource::find_name(s).map(|d| d.kind), Some(def.kind));
        }
    }
    for short in [
        "vm",
        "vms",
        "vmi",
        "vmis",
        "vmim",
        "vmims",
        "dv",
        "dvs",
        "pvc",
        "ns",
        "no",
        "sc",
        "net-attach-def",
        "hco",
    ] {
        assert!(api::resource::find_name(short).is_some(), "{short}");
    }
}
