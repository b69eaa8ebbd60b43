//! Operations with real guests (the test guest on /dev/kvm): as VMs start, stop and fail,
//! `/metrics`' VMI series follow (phase counts change, per-VM series appear and go), and
//! each lifecycle step is one JSON log line with the object's kind, namespace, name, uid
//! and node.

mod common;
mod vmm_support;

use common::api::*;
use common::guest::{import_image, IMAGE};
use serde_json::{json, Value};

const SUB_VMS: &str = "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines";

/// `monovirt serve` with a JSON-logging config, its local agent as `node-a`, the test
/// guest imported; stderr to `<dir>/stderr.log`.
struct Serve(BinaryServer);

impl Serve {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        import_image(dir.path());
        let config = dir.path().join("config.toml");
        std::fs::write(&config, "log_format = \"json\"\n").expect("config");
        let log = std::fs::File::create(dir.path().join("stderr.log")).expect("log file");
        Self(BinaryServer::launch(
            dir,
            ServeOptions {
                args: &["--node-name", "node-a", "--heartbeat-interval", "500ms"],
                config: Some(&config),
                log: Some("warn,monovirt::lifecycle=info"),
                stderr: Some(log),
            },
        ))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.0.dir.path().join("stderr.log")).expect("log")
    }

    async fn metrics(&self) -> String {
        let r = get(self.0.addr, "/metrics").await;
        assert_eq!(r.code(), 200);
        r.text()
    }
}

fn guest_vm(name: &str, strategy: &str, words: &str) -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"runStrategy": strategy, "template": {"spec": {
            "terminationGracePeriodSeconds": 2,
            "domain": {
                "memory": {"guest": "64Mi"},
                "firmware": {"kernelBoot": {"kernelArgs": format!("console=ttyS0 {words}"),
                    "container": {"image": IMAGE, "kernelPath": "/boot/vmlinux"}}},
                "devices": {"autoattachPodInterface": false}}}}},
    })
}

/// The sample lines of `metric` whose labels include every `label="value"` in `labels`.
fn samples<'a>(text: &'a str, metric: &str, labels: &[&str]) -> Vec<&'a str> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with('{'))
                && labels.iter().all(|want| l.contains(want))
        })
        .collect()
}

fn value(sample: &str) -> f64 {
    sample
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no value in {sample:?}"))
}

/// The lifecycle lines of the log: (kind, name, reason, node, uid, level).
fn lifecycle(log: &str) -> Vec<(String, String, String, String, String, String)> {
    log.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .filter(|v| v["target"] == "monovirt::lifecycle")
        .map(|v| {
            assert_eq!(v["namespace"], "default", "{v}");
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            (
                s("kind"),
                s("name"),
                s("reason"),
                s("node"),
                s("uid"),
                s("level"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vmi_metrics_and_lifecycle_logs_follow_vms() {
    if !vmm_support::kvm_available() {
        return;
    }
    let s = Serve::start();
    let addr = s.0.addr;
    wait_for(addr, "/api/v1/nodes/node-a", "node registered", |n| {
        n["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
    })
    .await;
    let before = s.metrics().await;
    assert!(
        samples(&before, "kubevirt_vmi_phase_count", &[]).is_empty(),
        "{before}"
    );
    assert!(samples(&before, "kubevirt_vmi_vcpu_seconds_total", &[]).is_empty());

    // A running VM: phase count running=1, its own series appear.
    let r = post(addr, VMS, &guest_vm("ticker", "Always", "tick")).await;
    assert_eq!(r.code(), 201, "{}", r.text());
    let vmi = wait_for(addr, &format!("{VMIS}/ticker"), "VMI Running", |v| {
        v["status"]["phase"] == "Running"
    })
    .await;
    let uid = vmi["metadata"]["uid"].as_str().expect("uid").to_string();
    let me = [
        "node=\"node-a\"",
        "namespace=\"default\"",
        "name=\"ticker\"",
    ];
    let running = s.metrics().await;
    let count = samples(
        &running,
        "kubevirt_vmi_phase_count",
        &["node=\"node-a\"", "phase=\"running\""],
    );
    assert_eq!(count.len(), 1, "{running}");
    assert_eq!(value(count[0]), 1.0);
    assert!(
        !samples(&running, "kubevirt_vmi_vcpu_seconds_total", &me).is_empty(),
        "{running}"
    );
    let resident = samples(&running, "kubevirt_vmi_memory_resident_bytes", &me);
    assert_eq!(resident.len(), 1, "{running}");
    assert!(value(resident[0]) > 0.0, "{running}");

    // A guest that crashes, run once: the VMI fails; the count says so.
    let r = post(addr, VMS, &guest_vm("crasher", "Once", "triplefault")).await;
    assert_eq!(r.code(), 201, "{}", r.text());
    wait_for(addr, &format!("{VMIS}/crasher"), "VMI Failed", |v| {
        v["status"]["phase"] == "Failed"
    })
    .await;
    let text = s.metrics().await;
    let failed = samples(&text, "kubevirt_vmi_phase_count", &["phase=\"failed\""]);
    assert_eq!(failed.len(), 1, "{text}");
    assert_eq!(value(failed[0]), 1.0);
    assert!(samples(
        &text,
        "kubevirt_vmi_vcpu_seconds_total",
        &["name=\"crasher\""]
    )
    .is_empty());

    // Stopped: its VMI goes, and with it the running count and its series.
    let r = put(addr, &format!("{SUB_VMS}/ticker/stop"), &json!({})).await;
    assert_eq!(r.code(), 202, "{}", r.text());
    wait_for(addr, &format!("{VMIS}/ticker"), "VMI gone", Value::is_null).await;
    let after = s.metrics().await;
    assert!(
        samples(&after, "kubevirt_vmi_phase_count", &["phase=\"running\""]).is_empty(),
        "{after}"
    );
    for metric in [
        "kubevirt_vmi_vcpu_seconds_total",
        "kubevirt_vmi_memory_resident_bytes",
    ] {
        assert!(samples(&after, metric, &me).is_empty(), "{metric}: {after}");
    }

    // The log: one JSON line per step, with kind, namespace, name, uid and node.
    let log = s.log();
    let steps = lifecycle(&log);
    let has = |kind: &str, name: &str, reason: &str, level: &str| {
        steps
            .iter()
            .find(|(k, n, r, _, _, l)| k == kind && n == name && r == reason && l == level)
            .unwrap_or_else(|| panic!("no {kind} {name} {reason} at {level} in\n{log}"))
            .clone()
    };
    const VMI: &str = "VirtualMachineInstance";
    let created = has("VirtualMachine", "ticker", "SuccessfulCreate", "INFO");
    assert!(!created.4.is_empty());
    for reason in ["Scheduled", "Started", "ShuttingDown"] {
        let (.., node, vmi_uid, _) = has(VMI, "ticker", reason, "INFO");
        assert_eq!(node, "node-a", "{reason}");
        assert_eq!(vmi_uid, uid, "{reason}");
    }
    has("VirtualMachine", "ticker", "SuccessfulDelete", "INFO");
    let (.., node, _, _) = has(VMI, "crasher", "Failed", "WARN");
    assert_eq!(node, "node-a");
}
