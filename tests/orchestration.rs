//! The control plane of `monovirt serve` end to end over HTTP: the VM controller creates a
//! VM's VMI, the scheduler binds it to a Ready node (or marks it Unschedulable), and halting
//! or deleting the VM removes the VMI. No node agent runs here (`serve --no-agent`): the
//! node is registered by the test, so VMIs stop at phase Scheduled. `tests/agent.rs` runs
//! the same flow with node agents and real guests.

mod common;

use common::api::*;
use serde_json::{json, Value};

/// `monovirt serve` without its local node agent.
fn control_plane() -> BinaryServer {
    BinaryServer::start_with(tempfile::tempdir().expect("tempdir"), &["--no-agent"])
}

const SUB: &str = "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines";

fn node(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/arch": api::kubevirt::defaults::host_architecture(),
            "kubernetes.io/hostname": name, "kubevirt.io/schedulable": "true"}},
        "status": {"allocatable": {"cpu": "4", "memory": "4Gi", "devices.kubevirt.io/kvm": "1k"},
                   "capacity": {"cpu": "4", "memory": "4Gi", "devices.kubevirt.io/kvm": "1k"},
                   "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]},
    })
}

fn vm_with(name: &str, strategy: &str, memory: &str) -> Value {
    let mut v = vm(name);
    v["spec"]["runStrategy"] = json!(strategy);
    v["spec"]["template"]["spec"]["domain"]["resources"]["requests"]["memory"] = json!(memory);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_to_scheduled_vmi_and_back() {
    let s = control_plane();
    let addr = s.addr;
    assert_eq!(post(addr, "/api/v1/nodes", &node("n1")).await.code(), 201);
    let created = post(addr, VMS, &vm_with("vm1", "Always", "64Mi")).await;
    assert_eq!(created.code(), 201, "{}", created.text());
    let vm_uid = created.json()["metadata"]["uid"]
        .as_str()
        .expect("a created VM has a uid")
        .to_string();

    let vmi = wait_for(addr, &format!("{VMIS}/vm1"), "VMI scheduled", |v| {
        v["status"]["phase"] == "Scheduled"
    })
    .await;
    assert_eq!(vmi["status"]["nodeName"], "n1");
    assert_eq!(vmi["metadata"]["labels"]["kubevirt.io/nodeName"], "n1");
    assert_eq!(vmi["metadata"]["labels"]["vm.kubevirt.io/name"], "vm1");
    assert_eq!(vmi["metadata"]["labels"]["app"], Value::Null);
    let owner = &vmi["metadata"]["ownerReferences"][0];
    assert_eq!(owner["uid"], vm_uid.as_str());
    assert_eq!(owner["controller"], true);
    assert_eq!(owner["blockOwnerDeletion"], true);
    let scheduled = vmi["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "PodScheduled")
        .expect("a PodScheduled condition");
    assert_eq!(scheduled["status"], "True");
    assert_eq!(
        vmi["status"]["phaseTransitionTimestamps"][0]["phase"],
        "Scheduled"
    );

    let vm = wait_for(addr, &format!("{VMS}/vm1"), "VM Starting", |v| {
        v["status"]["printableStatus"] == "Starting"
    })
    .await;
    assert_eq!(vm["status"]["created"], true);
    assert_eq!(vm["status"]["ready"], false);
    assert_eq!(vm["status"]["runStrategy"], "Always");

    // Too big for every node: the VMI stays Pending with the scheduler's reason.
    assert_eq!(
        post(addr, VMS, &vm_with("big", "Always", "64Gi"))
            .await
            .code(),
        201
    );
    let big = wait_for(addr, &format!("{VMIS}/big"), "VMI unschedulable", |v| {
        v["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "PodScheduled" && c["status"] == "False")
        })
    })
    .await;
    assert_eq!(big["status"]["phase"], "Pending");
    assert_eq!(big["status"]["nodeName"], Value::Null);
    let cond = &big["status"]["conditions"][0];
    assert_eq!(cond["reason"], "Unschedulable");
    assert_eq!(
        cond["message"],
        "0/1 nodes are available: 1 Insufficient memory."
    );
    let big_vm = wait_for(addr, &format!("{VMS}/big"), "VM ErrorUnschedulable", |v| {
        v["status"]["printableStatus"] == "ErrorUnschedulable"
    })
    .await;
    let failure = big_vm["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "Failure")
        .expect("a Failure condition");
    assert_eq!(failure["reason"], "Unschedulable");

    // PUT stop (Always becomes Halted) removes the VMI; the VM says Stopped.
    let stop = put(addr, &format!("{SUB}/vm1/stop"), &json!({})).await;
    assert_eq!(stop.code(), 202, "{}", stop.text());
    wait_for(addr, &format!("{VMIS}/vm1"), "VMI deleted", Value::is_null).await;
    let vm = wait_for(addr, &format!("{VMS}/vm1"), "VM Stopped", |v| {
        v["status"]["printableStatus"] == "Stopped" && v["status"]["created"] == false
    })
    .await;
    assert_eq!(vm["spec"]["runStrategy"], "Halted");
    assert_eq!(
        put(addr, &format!("{SUB}/vm1/stop"), &json!({}))
            .await
            .code(),
        409
    );

    // PUT start: Always again, a new VMI is created and bound.
    assert_eq!(
        put(addr, &format!("{SUB}/vm1/start"), &json!({}))
            .await
            .code(),
        202
    );
    let again = wait_for(addr, &format!("{VMIS}/vm1"), "VMI scheduled again", |v| {
        v["status"]["phase"] == "Scheduled"
    })
    .await;
    assert_eq!(
        put(addr, &format!("{SUB}/vm1/start"), &json!({}))
            .await
            .code(),
        409
    );

    // PUT restart: the VMI is replaced by a new one.
    let old_uid = again["metadata"]["uid"].clone();
    assert_eq!(
        put(addr, &format!("{SUB}/vm1/restart"), &json!({}))
            .await
            .code(),
        202
    );
    wait_for(addr, &format!("{VMIS}/vm1"), "VMI replaced", |v| {
        v["status"]["phase"] == "Scheduled" && v["metadata"]["uid"] != old_uid
    })
    .await;

    // Deleting the VMs takes their VMIs with them (owner references).
    assert_eq!(delete(addr, &format!("{VMS}/vm1"), None).await.code(), 200);
    assert_eq!(delete(addr, &format!("{VMS}/big"), None).await.code(), 200);
    wait_for(
        addr,
        &format!("{VMIS}/vm1"),
        "VMI collected",
        Value::is_null,
    )
    .await;
    wait_for(
        addr,
        &format!("{VMIS}/big"),
        "VMI collected",
        Value::is_null,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_waits_and_halted_stays_down_and_cordon_blocks() {
    let s = control_plane();
    let addr = s.addr;
    let mut cordoned = node("n1");
    cordoned["spec"] = json!({"unschedulable": true});
    assert_eq!(post(addr, "/api/v1/nodes", &cordoned).await.code(), 201);
    assert_eq!(
        post(addr, VMS, &vm_with("manual", "Manual", "64Mi"))
            .await
            .code(),
        201
    );
    assert_eq!(
        post(addr, VMS, &vm_with("halted", "Halted", "64Mi"))
            .await
            .code(),
        201
    );
    assert_eq!(
        post(addr, VMS, &vm_with("always", "Always", "64Mi"))
            .await
            .code(),
        201
    );
    for name in ["manual", "halted"] {
        let vm = wait_for(addr, &format!("{VMS}/{name}"), "VM Stopped", |v| {
            v["status"]["printableStatus"] == "Stopped"
        })
        .await;
        assert_eq!(vm["status"]["created"], false);
        assert_eq!(get(addr, &format!("{VMIS}/{name}")).await.code(), 404);
    }
    let vmi = wait_for(addr, &format!("{VMIS}/always"), "VMI unschedulable", |v| {
        v["status"]["conditions"][0]["reason"] == "Unschedulable"
    })
    .await;
    assert_eq!(
        vmi["status"]["conditions"][0]["message"],
        "0/1 nodes are available: 1 node is unschedulable (cordoned)."
    );
    // Manual starts on request.
    assert_eq!(
        put(addr, &format!("{SUB}/halted/restart"), &json!({}))
            .await
            .code(),
        409
    );
    assert_eq!(
        put(addr, &format!("{SUB}/manual/stop"), &json!({}))
            .await
            .code(),
        409
    );
    assert_eq!(
        put(addr, &format!("{SUB}/manual/start"), &json!({}))
            .await
            .code(),
        202
    );
    wait_for(addr, &format!("{VMIS}/manual"), "Manual VMI created", |v| {
        !v.is_null()
    })
    .await;
    let groups = get(addr, "/apis/subresources.kubevirt.io/v1").await.json();
    assert_eq!(groups["resources"][0]["name"], "virtualmachines/start");

    // Uncordoning the node retries the VMI.
    let r = patch(
        addr,
        "/api/v1/nodes/n1",
        "application/merge-patch+json",
        r#"{"spec":{"unschedulable":null}}"#,
    )
    .await;
    assert_eq!(r.code(), 200, "{}", r.text());
    let vmi = wait_for(addr, &format!("{VMIS}/always"), "VMI scheduled", |v| {
        v["status"]["phase"] == "Scheduled"
    })
    .await;
    assert_eq!(vmi["status"]["nodeName"], "n1");
}
