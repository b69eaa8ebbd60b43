//! Storage as VMs see it, on /dev/kvm: a VM boots (the test guest, by `kernelBoot` from an
//! imported image) with an imported claim as its virtio-blk disk, and the guest's CRC-32
//! of the disk's first bytes (`blkcrc32=N`, spanning several qcow2 clusters) matches the
//! image's raw content. Covers the
//! issue's exact PVC manifest (class `ocs-gold` made with a path, a qcow2 from a loopback
//! URL) and a VM's dataVolumeTemplates (the VM waits and says so while its volume is
//! imported, then runs).

mod common;
mod storage_support;
mod vmm_support;

use common::api::{delete, get, post, wait_for, BinaryServer, VMIS, VMS};
use common::guest::IMAGE;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use storage_support::{issue_manifest, pattern, s, write_qcow2, ImageServer, IMPORT_PHASE};

const PVCS: &str = "/api/v1/namespaces/default/persistentvolumeclaims";
const DVS: &str = "/apis/cdi.kubevirt.io/v1beta1/namespaces/default/datavolumes";
const MIB: usize = 1 << 20;
/// Bytes the guest checks: eight 64 KiB qcow2 clusters. The guest's CRC takes about 6 s
/// per MiB where PVM emulates its ring 0, so not the whole image.
const CHECKED: usize = 512 << 10;

/// A VM's template spec booting the test guest with `volume` as its only disk; the guest
/// reports the CRC-32 of the disk's first [`CHECKED`] bytes, then ticks until stopped.
fn guest_spec(volume: Value) -> Value {
    json!({
        "terminationGracePeriodSeconds": 1,
        "domain": {
            "memory": {"guest": "64Mi"},
            "firmware": {"kernelBoot": {
                "kernelArgs": format!("console=ttyS0 nosmp blkcrc32={CHECKED} tick"),
                "container": {"image": IMAGE, "kernelPath": "/boot/vmlinux"}}},
            "devices": {"autoattachPodInterface": false,
                "disks": [{"name": "rootdisk", "serial": "imported", "disk": {"bus": "virtio"}}]}},
        "volumes": [volume],
    })
}

/// Boots-and-checks: waits for VM `name`'s VMI to run, reads the guest's report and
/// asserts that its only disk is the claim (serial, size) and starts with `raw`.
async fn guest_sees(addr: SocketAddr, name: &str, raw: &[u8], disk_bytes: u64) {
    let vmi = wait_for(addr, &format!("{VMIS}/{name}"), "VMI Running", |v| {
        v["status"]["phase"] == "Running"
    })
    .await;
    assert_eq!(vmi["status"]["nodeName"], "node-a");
    let text = common::console::read_until(addr, name, "tick=1").await;
    let report = common::guest::Report::parse(&text);
    assert_eq!(report.count("virtio.blk.0"), 1, "{text}");
    assert!(report.get("virtio.blk.1").is_none(), "one disk: {text}");
    let blk = report.get("virtio.blk.0").expect("disk");
    assert!(
        blk.ends_with(&format!(",sectors={},ro=0", disk_bytes / 512)),
        "{blk}"
    );
    assert_eq!(report.get("virtio.blk.0.serial"), Some("imported"));
    let crc = crc32fast::hash(&raw[..CHECKED]);
    assert_eq!(
        report.get("virtio.blk.0.crc32"),
        Some(format!("{CHECKED},{crc:#010x}").as_str()),
        "the guest reads the imported bytes: {text}"
    );
}

/// Deletes VM `name` and waits until its VMI is gone.
async fn delete_vm(addr: SocketAddr, name: &str) {
    let r = delete(addr, &format!("{VMS}/{name}"), None).await;
    assert_eq!(r.code(), 200, "{}", r.text());
    wait_for(addr, &format!("{VMIS}/{name}"), "VMI gone", Value::is_null).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_boots_with_the_issue_manifest_claim_and_reads_the_imported_qcow2() {
    if !vmm_support::kvm_available() {
        return;
    }
    let srv_dir = tempfile::tempdir().expect("tempdir");
    let raw = pattern(6 * MIB + 1000, 7);
    write_qcow2(srv_dir.path(), "Fedora", &raw);
    let images = ImageServer::start(srv_dir.path().to_path_buf()).await;
    let server = BinaryServer::with_guest(&[]);
    let addr = server.addr;
    let gold = server.dir.path().join("ocs-gold");
    let class = post(
        addr,
        "/apis/storage.k8s.io/v1/storageclasses",
        &json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "ocs-gold"}, "provisioner": "monovirt.io/local",
            "reclaimPolicy": "Delete", "parameters": {"path": gold.display().to_string()}}),
    )
    .await;
    assert_eq!(class.code(), 201, "{}", class.text());

    // The issue's manifest, only the URL changed.
    let pvc = issue_manifest(&images.url("images", "Fedora.qcow2"));
    let created = post(addr, PVCS, &pvc).await;
    assert_eq!(created.code(), 201, "{}", created.text());

    // The VM is posted at once: its VMI waits (Scheduled) until the import succeeded, and
    // a half-imported disk is never attached.
    let vm = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "fedora", "namespace": "default"},
        "spec": {"runStrategy": "Always", "template": {"spec": guest_spec(
            json!({"name": "rootdisk", "persistentVolumeClaim": {"claimName": "fedora-disk0"}}))}}});
    let r = post(addr, VMS, &vm).await;
    assert_eq!(r.code(), 201, "{}", r.text());
    let pvc = wait_for(addr, &format!("{PVCS}/fedora-disk0"), "import done", |v| {
        s(v, IMPORT_PHASE) == "Succeeded"
    })
    .await;
    assert_eq!(s(&pvc, "/status/phase"), "Bound");
    guest_sees(addr, "fedora", &raw, 20 << 30).await;
    let pv = get(
        addr,
        &format!("/api/v1/persistentvolumes/{}", s(&pvc, "/spec/volumeName")),
    )
    .await
    .json();
    assert!(
        Path::new(s(&pv, "/spec/hostPath/path")).starts_with(&gold),
        "{pv:#}"
    );

    // In use: deleting the claim only marks it; it goes once the VM is gone.
    let r = delete(addr, &format!("{PVCS}/fedora-disk0"), None).await;
    assert!(r.code() == 200 || r.code() == 202, "{}", r.text());
    let kept = get(addr, &format!("{PVCS}/fedora-disk0")).await;
    assert_eq!(kept.code(), 200, "the claim in use is kept");
    delete_vm(addr, "fedora").await;
    wait_for(
        addr,
        &format!("{PVCS}/fedora-disk0"),
        "claim gone",
        Value::is_null,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_waits_for_its_data_volume_template_then_runs_on_it() {
    if !vmm_support::kvm_available() {
        return;
    }
    let srv_dir = tempfile::tempdir().expect("tempdir");
    // 4 MiB of qcow2 through the throttled route (64 KiB every 25 ms): about 2 s of
    // import to watch the VM wait.
    let raw = pattern(4 * MIB - 512, 8);
    write_qcow2(srv_dir.path(), "disk", &raw);
    let images = ImageServer::start(srv_dir.path().to_path_buf()).await;
    let server = BinaryServer::with_guest(&[]);
    let addr = server.addr;

    let spec = guest_spec(json!({"name": "rootdisk", "dataVolume": {"name": "tmpl-disk"}}));
    let vm = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "tmpl", "namespace": "default"},
        "spec": {"runStrategy": "Always",
            "dataVolumeTemplates": [{"metadata": {"name": "tmpl-disk"},
                "spec": {"source": {"http": {"url": images.url("slow", "disk.qcow2")}},
                    "storage": {"resources": {"requests": {"storage": "64Mi"}}}}}],
            "template": {"spec": spec}}});
    let r = post(addr, VMS, &vm).await;
    assert_eq!(r.code(), 201, "{}", r.text());

    // While the import runs the VM has no VMI and says why.
    let waiting = wait_for(addr, &format!("{VMS}/tmpl"), "VM Provisioning", |v| {
        v["status"]["printableStatus"] == "Provisioning"
    })
    .await;
    assert_eq!(waiting["status"]["created"], false, "{waiting:#}");
    assert_eq!(get(addr, &format!("{VMIS}/tmpl")).await.code(), 404);
    let dv = get(addr, &format!("{DVS}/tmpl-disk")).await.json();
    let owner = &dv["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "VirtualMachine", "{dv:#}");
    assert_eq!(owner["name"], "tmpl");
    assert_ne!(s(&dv, "/status/phase"), "Succeeded", "{dv:#}");

    // Then it runs on the imported volume.
    wait_for(addr, &format!("{DVS}/tmpl-disk"), "import done", |v| {
        s(v, "/status/phase") == "Succeeded"
    })
    .await;
    guest_sees(addr, "tmpl", &raw, 64 << 20).await;
    wait_for(addr, &format!("{VMS}/tmpl"), "VM Running", |v| {
        v["status"]["printableStatus"] == "Running"
    })
    .await;

    // The DataVolume (and its claim) belong to the VM and go with it.
    delete_vm(addr, "tmpl").await;
    wait_for(
        addr,
        &format!("{DVS}/tmpl-disk"),
        "DataVolume gone",
        Value::is_null,
    )
    .await;
    wait_for(
        addr,
        &format!("{PVCS}/tmpl-disk"),
        "claim gone",
        Value::is_null,
    )
    .await;
}
