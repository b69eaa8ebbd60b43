//! The non-KubeVirt kinds through the registry: realistic objects as the node agent, the CDI
//! controller and users write them pass the schema and validation; bad ones get causes; the
//! computed table columns read like kubectl's.

use api::resource::{find_kind, ResourceDef};
use serde_json::{json, Value};

fn def(group: &str, kind: &str) -> &'static ResourceDef {
    find_kind(group, kind).expect("kind is served")
}

fn assert_clean(def: &ResourceDef, obj: &Value) {
    assert!(
        (def.unknown_fields)(obj).is_empty(),
        "{}: {:?}",
        def.kind,
        (def.unknown_fields)(obj)
    );
    assert!(
        api::validation::validate_metadata(def, obj).is_empty(),
        "{}",
        def.kind
    );
    assert_eq!((def.validate)(obj), vec![], "{}", def.kind);
}

fn node() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node01", "labels": {"kubernetes.io/hostname": "node01",
            "kubernetes.io/arch": "amd64", "node-role.kubernetes.io/worker": "", "kubevirt.io/schedulable": "true"},
            "creationTimestamp": "2026-11-20T10:00:00Z"},
        "spec": {"taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule",
                             "timeAdded": "2026-11-20T10:00:00Z"}], "unschedulable": true},
        "status": {
            "capacity": {"cpu": "8", "memory": "32Gi", "devices.kubevirt.io/kvm": "1k"},
            "allocatable": {"cpu": "7500m", "memory": "30Gi", "devices.kubevirt.io/kvm": "1k"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "AgentReady",
                            "message": "monovirt agent is posting ready status",
                            "lastHeartbeatTime": "2026-11-25T10:00:00Z", "lastTransitionTime": "2026-11-20T10:00:00Z"}],
            "addresses": [{"type": "InternalIP", "address": "192.0.2.10"}, {"type": "Hostname", "address": "node01"}],
            "nodeInfo": {"architecture": "amd64", "bootID": "b", "containerRuntimeVersion": "monovirt://0.1.0",
                         "kernelVersion": "6.12.0", "kubeProxyVersion": "", "kubeletVersion": "v1.32.0-monovirt",
                         "machineID": "m", "operatingSystem": "linux", "osImage": "Debian GNU/Linux 13 (trixie)",
                         "systemUUID": "u"}
        }
    })
}

#[test]
fn node_as_the_agent_writes_it() {
    let d = def("", "Node");
    assert_clean(d, &node());
    let now = "2026-11-25T10:00:00Z".parse().expect("time");
    assert_eq!(
        api::table::cells(d, &node(), now),
        vec![
            json!("node01"),
            json!("Ready,SchedulingDisabled"),
            json!("worker"),
            json!("5d"),
            json!("v1.32.0-monovirt"),
            json!("192.0.2.10"),
            Value::Null,
            json!("Debian GNU/Linux 13 (trixie)"),
            json!("6.12.0"),
            json!("monovirt://0.1.0")
        ]
    );
    let mut bad = node();
    bad["spec"]["taints"] = json!([{"key": "a", "effect": "NoSchedule"}, {"key": "a", "effect": "NoSchedule"}, {"effect": "Never"}]);
    let fields: Vec<String> = (d.validate)(&bad).into_iter().map(|c| c.field).collect();
    assert_eq!(
        fields,
        vec![
            "spec.taints[1]",
            "spec.taints[2].key",
            "spec.taints[2].effect"
        ]
    );
    let mut bad = node();
    bad["status"]["capacity"]["cpu"] = json!(true);
    assert_eq!((d.validate)(&bad)[0].field, "status.capacity.cpu");
}

#[test]
fn namespace_defaults_and_names() {
    let d = def("", "Namespace");
    let mut ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "vms"}});
    (d.default)(&mut ns);
    assert_clean(d, &ns);
    let now = "2026-11-25T10:00:00Z".parse().expect("time");
    assert_eq!(api::table::cells(d, &ns, now)[1], json!("Active"));
    // Namespaces are DNS labels, not subdomains.
    let dotted = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a.b"}});
    assert_eq!(
        api::validation::validate_metadata(d, &dotted)[0].field,
        "metadata.name"
    );
    let vm = def("kubevirt.io", "VirtualMachine");
    let dotted_vm = json!({"metadata": {"name": "a.b", "namespace": "default"}});
    assert!(api::validation::validate_metadata(vm, &dotted_vm).is_empty());
    let cluster_scoped = json!({"metadata": {"name": "n", "namespace": "default"}});
    assert!(api::validation::validate_metadata(def("", "Node"), &cluster_scoped).is_empty());
    let bad_ns = json!({"metadata": {"name": "v", "namespace": "Bad_NS"}});
    assert_eq!(
        api::validation::validate_metadata(vm, &bad_ns)[0].field,
        "metadata.namespace"
    );
}

#[test]
fn pvc_defaults_validation_and_columns() {
    let d = def("", "PersistentVolumeClaim");
    let mut pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "fedora-dv", "namespace": "default"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}},
                 "storageClassName": "local"}});
    (d.default)(&mut pvc);
    assert_clean(d, &pvc);
    assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
    let now = "2026-11-25T10:00:00Z".parse().expect("time");
    let cells = api::table::cells(d, &pvc, now);
    assert_eq!(
        cells[1..6],
        [
            json!("Pending"),
            Value::Null,
            json!(""),
            json!(""),
            json!("local")
        ]
    );

    let bad = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "x"},
        "spec": {"accessModes": ["ReadWriteSometimes"], "resources": {"requests": {"storage": "-1Gi"}}}});
    let fields: Vec<String> = (d.validate)(&bad).into_iter().map(|c| c.field).collect();
    assert_eq!(
        fields,
        vec!["spec.accessModes[0]", "spec.resources.requests.storage"]
    );
}

#[test]
fn storage_class_event_nad_hco() {
    let sc = def("storage.k8s.io", "StorageClass");
    let mut obj = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "local", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "monovirt.io/local-path", "allowVolumeExpansion": true});
    (sc.default)(&mut obj);
    assert_clean(sc, &obj);
    let now = "2026-11-25T10:00:00Z".parse().expect("time");
    assert_eq!(
        api::table::cells(sc, &obj, now)[..5],
        [
            json!("local (default)"),
            json!("monovirt.io/local-path"),
            json!("Delete"),
            json!("Immediate"),
            json!("true")
        ]
    );
    obj["volumeBindingMode"] = json!("Eventually");
    assert_eq!((sc.validate)(&obj)[0].field, "volumeBindingMode");

    let ev = def("", "Event");
    let obj = json!({"apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "vm-cirros.187a1b2c3d4e5f60", "namespace": "default"},
        "involvedObject": {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": "vm-cirros",
                           "namespace": "default", "uid": "5a0a"},
        "reason": "SuccessfulCreate", "message": "Started the virtual machine by creating the new virtual machine instance vm-cirros",
        "source": {"component": "virtualmachine-controller"}, "type": "Normal", "count": 1,
        "firstTimestamp": "2026-11-25T09:59:00Z", "lastTimestamp": "2026-11-25T09:59:00Z"});
    assert_clean(ev, &obj);
    assert_eq!(
        api::table::cells(ev, &obj, now),
        vec![
            json!("vm-cirros.187a1b2c3d4e5f60"),
            json!("60s"),
            json!("Normal"),
            json!("SuccessfulCreate"),
            json!("virtualmachine/vm-cirros"),
            obj["message"].clone()
        ]
    );

    let nad = def("k8s.cni.cncf.io", "NetworkAttachmentDefinition");
    let obj = json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "br1", "namespace": "default"},
        "spec": {"config": "{\"cniVersion\": \"0.3.1\", \"name\": \"br1\", \"type\": \"bridge\", \"bridge\": \"br1\"}"}});
    assert_clean(nad, &obj);
    let bad = json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "br1"}, "spec": {"config": "{not json"}});
    assert_eq!((nad.validate)(&bad)[0].field, "spec.config");

    let hco = def("hco.kubevirt.io", "HyperConverged");
    let obj = json!({"apiVersion": "hco.kubevirt.io/v1beta1", "kind": "HyperConverged",
        "metadata": {"name": "kubevirt-hyperconverged", "namespace": "kubevirt-hyperconverged"},
        "spec": {"featureGates": {"deployKubeSecondaryDNS": false}, "evictionStrategy": "LiveMigrate",
                 "liveMigrationConfig": {"parallelMigrationsPerCluster": 5, "bandwidthPerMigration": "64Mi",
                                         "completionTimeoutPerGiB": 150, "progressTimeout": 150},
                 "workloads": {"nodePlacement": {"nodeSelector": {"a": "b"}}}}});
    assert_clean(hco, &obj);
    let mut bad = obj.clone();
    bad["spec"]["liveMigrationConfig"]["parallelMigrationsPerCluster"] = json!(0);
    assert_eq!(
        (hco.validate)(&bad)[0].field,
        "spec.liveMigrationConfig.parallelMigrationsPerCluster"
    );
}

#[test]
fn migration_defaults_label_and_validation() {
    let d = def("kubevirt.io", "VirtualMachineInstanceMigration");
    let mut m = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
        "metadata": {"name": "migration-job"}, "spec": {"vmiName": "vmi-fedora"}});
    (d.default)(&mut m);
    assert_clean(d, &m);
    assert_eq!(
        m["metadata"]["labels"]["kubevirt.io/vmi-name"],
        "vmi-fedora"
    );
    let now = "2026-11-25T10:00:00Z".parse().expect("time");
    m["status"] = json!({"phase": "Running"});
    assert_eq!(
        api::table::cells(d, &m, now),
        vec![
            json!("migration-job"),
            json!("Running"),
            json!("vmi-fedora")
        ]
    );
    let bad = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
        "metadata": {"name": "m"}, "spec": {}});
    assert_eq!((d.validate)(&bad)[0].field, "spec.vmiName");
}

#[test]
fn datavolume_columns() {
    let d = def("cdi.kubevirt.io", "DataVolume");
    let dv = json!({"metadata": {"name": "fedora", "creationTimestamp": "2026-11-25T09:00:00Z"},
        "status": {"phase": "ImportInProgress", "progress": "45.10%", "restartCount": 2}});
    let now = "2026-11-25T10:00:00Z".parse().expect("time");
    assert_eq!(
        api::table::cells(d, &dv, now),
        vec![
            json!("fedora"),
            json!("ImportInProgress"),
            json!("45.10%"),
            json!(2),
            json!("60m")
        ]
    );
}
