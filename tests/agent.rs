//! The orchestration loop end to end with node agents and real guests (the test guest on
//! /dev/kvm, booted through `kernelBoot` from an imported image): `monovirt serve` runs
//! its local agent, a second node joins as a separate `monovirt agent` process. A VM is
//! POSTed, its guest's lines show on its console (through the API's console
//! subresource, bridged to the node endpoint), it pauses, stops, starts and is deleted
//! with nothing left behind; run strategies restart (or not) a crashing guest; two nodes
//! take two anti-affine VMs; a lost node's VM comes back on the other node.

mod common;
mod vmm_support;

use common::api::*;
use common::console::Console;
use common::guest::{import_image, IMAGE};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// Generous: guests run under PVM here. A hang fails, a slow run does not.
const DEADLINE: Duration = Duration::from_secs(120);
const SUB_VMS: &str = "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines";
const SUB_VMIS: &str =
    "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachineinstances";

/// `monovirt serve` with its local agent as node `node-a`, the guest image imported.
fn serve(extra: &[&str]) -> BinaryServer {
    let mut args = vec!["--heartbeat-interval", "500ms"];
    args.extend_from_slice(extra);
    BinaryServer::with_guest(&args)
}

/// A VM booting the test guest with `words` on its command line.
fn guest_vm(name: &str, strategy: &str, words: &str) -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"runStrategy": strategy, "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {
                "terminationGracePeriodSeconds": 2,
                "domain": {
                    "cpu": {"sockets": 1, "cores": 2, "threads": 1},
                    "memory": {"guest": "64Mi"},
                    "firmware": {"kernelBoot": {"kernelArgs": format!("console=ttyS0 {words}"),
                        "container": {"image": IMAGE, "kernelPath": "/boot/vmlinux"}}},
                    "devices": {"autoattachPodInterface": false}}}}},
    })
}

fn vmi_path(name: &str) -> String {
    format!("{VMIS}/{name}")
}

fn phase_is(phase: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["status"]["phase"] == phase
}

/// Reads the console WebSocket until `needle` shows up; returns everything read.
async fn console_until(addr: SocketAddr, vmi: &str, needle: &str) -> String {
    let mut console = Console::open(addr, vmi).await;
    console.until(needle).await;
    // Input travels too (the test guest does not read it; the VM must take it).
    console.send(b"\r\n").await;
    console.close().await
}

/// Types `line` into the console subresource once the `echo` guest is ready, and waits
/// for the guest's `echo=<line>` answer.
async fn console_roundtrip(addr: SocketAddr, vmi: &str, line: &str) {
    let url = format!("ws://{addr}{SUB_VMIS}/{vmi}/console");
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("console WebSocket");
    let mut text = String::new();
    let mut sent = false;
    let answer = format!("echo={line}\n");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !text.contains(&answer) {
        if !sent && text.contains("echo.ready=1\n") {
            ws.send(Message::Binary(format!("{line}\r").into_bytes().into()))
                .await
                .expect("console input");
            sent = true;
        }
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no {answer:?} on the console; got {text}"));
        match msg {
            Some(Ok(Message::Binary(b))) => text.push_str(&String::from_utf8_lossy(&b)),
            Some(Ok(_)) => {}
            other => panic!("console ended ({other:?}); got {text}"),
        }
    }
    let _ = ws.close(None).await;
}

/// The names of the threads of process `pid`.
fn threads(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                .map(|c| c.trim().to_string())
                .collect()
        })
        .unwrap_or_default()
}

async fn wait_no_vm_threads(pid: u32) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left: Vec<String> = threads(pid)
            .into_iter()
            .filter(|t| t.starts_with("vcpu-") || t.starts_with("vmm-"))
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "VM threads left: {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn run_dir_entries(data_dir: &Path) -> Vec<String> {
    std::fs::read_dir(data_dir.join("run/vmis"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_boots_shows_its_console_pauses_stops_starts_and_is_deleted() {
    if !vmm_support::kvm_available() {
        return;
    }
    let s = serve(&[]);
    let addr = s.addr;
    let node = wait_for(addr, "/api/v1/nodes/node-a", "node registered", |n| {
        condition(n, "Ready").is_some_and(|c| c["status"] == "True")
    })
    .await;
    assert_eq!(
        node["metadata"]["labels"]["kubevirt.io/schedulable"],
        "true"
    );
    assert_eq!(
        node["status"]["allocatable"]["devices.kubevirt.io/kvm"],
        "1k"
    );
    assert!(node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_u64() > Some(0));

    let created = post(addr, VMS, &guest_vm("testvm", "Always", "tick")).await;
    assert_eq!(created.code(), 201, "{}", created.text());
    let vmi = wait_for(
        addr,
        &vmi_path("testvm"),
        "VMI Running",
        phase_is("Running"),
    )
    .await;
    assert_eq!(vmi["status"]["nodeName"], "node-a");
    assert_eq!(vmi["status"]["currentCPUTopology"]["cores"], 2);
    assert_eq!(vmi["status"]["memory"]["guestAtBoot"], "64Mi");
    assert!(vmi["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| f.iter().any(|f| f == "monovirt.io/node-agent")));
    let phases: Vec<&str> = vmi["status"]["phaseTransitionTimestamps"]
        .as_array()
        .expect("phase timestamps")
        .iter()
        .filter_map(|p| p["phase"].as_str())
        .collect();
    assert_eq!(phases, ["Scheduled", "Running"]);
    assert_eq!(condition(&vmi, "Ready").expect("Ready")["status"], "True");
    let uid = vmi["metadata"]["uid"].as_str().expect("uid").to_string();
    assert!(run_dir_entries(s.dir.path()).contains(&uid));

    // The guest's report and its ticks arrive through the console subresource.
    let text = console_until(addr, "testvm", "tick=2").await;
    let report = common::guest::Report::parse(&text);
    assert!(report.require("guest").is_ok(), "{text}");
    assert_eq!(report.get("smp.online"), Some("2"), "{text}");
    wait_for(addr, &format!("{VMS}/testvm"), "VM Running", |v| {
        v["status"]["printableStatus"] == "Running" && v["status"]["ready"] == true
    })
    .await;

    // Pause and unpause through the subresources: the Paused condition comes and goes.
    let paused = put(addr, &format!("{SUB_VMIS}/testvm/pause"), &json!({})).await;
    assert_eq!(paused.code(), 200, "{}", paused.text());
    let vmi = wait_for(addr, &vmi_path("testvm"), "VMI Paused", |v| {
        condition(v, "Paused").is_some_and(|c| c["status"] == "True")
    })
    .await;
    assert_eq!(
        condition(&vmi, "Paused").expect("Paused")["reason"],
        "PausedByUser"
    );
    assert_eq!(vmi["status"]["phase"], "Running");
    wait_for(addr, &format!("{VMS}/testvm"), "VM Paused", |v| {
        v["status"]["printableStatus"] == "Paused"
    })
    .await;
    assert_eq!(
        put(addr, &format!("{SUB_VMIS}/testvm/pause"), &json!({}))
            .await
            .code(),
        409
    );
    let unpaused = put(addr, &format!("{SUB_VMIS}/testvm/unpause"), &json!({})).await;
    assert_eq!(unpaused.code(), 200, "{}", unpaused.text());
    wait_for(addr, &vmi_path("testvm"), "VMI unpaused", |v| {
        condition(v, "Paused").is_none()
    })
    .await;

    // Stop: the guest is powered off (here: forced after its 2 s grace, the tick guest
    // ignores the button), the VMI goes, the VM says Stopped, the VM's files are gone.
    let stop = put(addr, &format!("{SUB_VMS}/testvm/stop"), &json!({})).await;
    assert_eq!(stop.code(), 202, "{}", stop.text());
    wait_for(addr, &vmi_path("testvm"), "VMI gone", Value::is_null).await;
    wait_for(addr, &format!("{VMS}/testvm"), "VM Stopped", |v| {
        v["status"]["printableStatus"] == "Stopped"
    })
    .await;
    assert!(!run_dir_entries(s.dir.path()).contains(&uid));
    wait_no_vm_threads(s.child.id()).await;

    // Start: a new VMI, running again.
    assert_eq!(
        put(addr, &format!("{SUB_VMS}/testvm/start"), &json!({}))
            .await
            .code(),
        202
    );
    let again = wait_for(
        addr,
        &vmi_path("testvm"),
        "VMI Running again",
        phase_is("Running"),
    )
    .await;
    assert_ne!(again["metadata"]["uid"], uid.as_str());
    console_until(addr, "testvm", "tick=1").await;

    // Delete the VM: the VMI, its VM threads and its files all go.
    assert_eq!(
        delete(addr, &format!("{VMS}/testvm"), None).await.code(),
        200
    );
    wait_for(addr, &vmi_path("testvm"), "VMI collected", Value::is_null).await;
    wait_no_vm_threads(s.child.id()).await;
    assert!(run_dir_entries(s.dir.path()).is_empty());
    let events = get(addr, "/api/v1/namespaces/default/events").await.json();
    let reasons: Vec<&str> = events["items"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["source"]["component"] == "monovirt-agent")
        .filter_map(|e| e["reason"].as_str())
        .collect();
    for r in ["Started", "ShuttingDown"] {
        assert!(reasons.contains(&r), "{reasons:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_round_trip_and_rerun_on_failure_restarts_a_crashing_guest_once_does_not() {
    if !vmm_support::kvm_available() {
        return;
    }
    let s = serve(&[]);
    let addr = s.addr;
    for (name, strategy, words) in [
        ("rerun", "RerunOnFailure", "triplefault"),
        ("once", "Once", "triplefault"),
        ("done", "Once", "poweroff"),
    ] {
        let r = post(addr, VMS, &guest_vm(name, strategy, words)).await;
        assert_eq!(r.code(), 201, "{}", r.text());
    }
    // A VM whose VMI fails before its guest ever runs (its kernel image is missing).
    let mut nostart = guest_vm("nostart", "Always", "poweroff");
    nostart["spec"]["template"]["spec"]["domain"]["firmware"]["kernelBoot"]["container"]["image"] =
        json!("monovirt/missing:1");
    let r = post(addr, VMS, &nostart).await;
    assert_eq!(r.code(), 201, "{}", r.text());
    let done = wait_for(
        addr,
        &vmi_path("done"),
        "poweroff Succeeded",
        phase_is("Succeeded"),
    )
    .await;
    assert_eq!(
        condition(&done, "Ready").expect("Ready")["message"],
        "guest powered off"
    );
    let failed = wait_for(addr, &vmi_path("rerun"), "crash Failed", phase_is("Failed")).await;
    let first = failed["metadata"]["uid"].clone();
    assert!(condition(&failed, "Ready").expect("Ready")["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("guest crashed")));
    // RerunOnFailure: a new VMI runs (and crashes) again. Its guest had run, so that was
    // no start failure (KubeVirt's rule): no backoff, no CrashLoopBackOff.
    wait_for(addr, &vmi_path("rerun"), "a second run", |v| {
        !v.is_null() && v["metadata"]["uid"] != first
    })
    .await;
    let vm = get(addr, &format!("{VMS}/rerun")).await.json();
    assert_eq!(vm["status"]["startFailure"], Value::Null, "{vm}");
    // A VMI that failed before its guest ran is a start failure: the VM backs off.
    let nostart = wait_for(addr, &format!("{VMS}/nostart"), "CrashLoopBackOff", |v| {
        v["status"]["printableStatus"] == "CrashLoopBackOff"
    })
    .await;
    assert_eq!(
        nostart["status"]["startFailure"]["consecutiveFailCount"], 1,
        "{nostart}"
    );
    // Once: the failed VMI stays, nothing is started again.
    let once = wait_for(addr, &vmi_path("once"), "Once Failed", phase_is("Failed")).await;
    assert_eq!(
        get(addr, &vmi_path("once")).await.json()["metadata"]["uid"],
        once["metadata"]["uid"]
    );
    // ... and its VM is Stopped: Once does not restart, so it never backs off.
    let once_vm = wait_for(addr, &format!("{VMS}/once"), "Once VM Stopped", |v| {
        v["status"]["printableStatus"] == "Stopped"
    })
    .await;
    assert_eq!(once_vm["status"]["startFailure"], Value::Null);
    // The finished VMIs hold no finalizer and no files.
    let kept = wait_for(addr, &vmi_path("done"), "finalizer released", |v| {
        v["metadata"]["finalizers"]
            .as_array()
            .is_none_or(Vec::is_empty)
    })
    .await;
    assert_eq!(kept["status"]["phase"], "Succeeded");
    for name in ["rerun", "once", "done", "nostart"] {
        assert_eq!(
            delete(addr, &format!("{VMS}/{name}"), None).await.code(),
            200
        );
    }
    for name in ["rerun", "once", "done", "nostart"] {
        wait_for(addr, &vmi_path(name), "VMI collected", Value::is_null).await;
    }
    wait_no_vm_threads(s.child.id()).await;

    // A line typed into the console subresource reaches the guest, and its answer comes
    // back the same way.
    let r = post(addr, VMS, &guest_vm("echo", "Always", "echo")).await;
    assert_eq!(r.code(), 201, "{}", r.text());
    wait_for(addr, &vmi_path("echo"), "echo Running", phase_is("Running")).await;
    console_roundtrip(addr, "echo", "hello monovirt").await;
    assert_eq!(delete(addr, &format!("{VMS}/echo"), None).await.code(), 200);
    wait_for(addr, &vmi_path("echo"), "VMI collected", Value::is_null).await;
    wait_no_vm_threads(s.child.id()).await;
}

/// A VMI (no VM) booting the test guest with `words`, with a long grace period: a guest
/// that ignored the power button would be forced off only after 60 s, as Failed.
fn guest_vmi(name: &str, words: &str) -> Value {
    let vm = guest_vm(name, "Once", words);
    let mut spec = vm["spec"]["template"]["spec"].clone();
    spec["terminationGracePeriodSeconds"] = json!(60);
    json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_vmi_powers_its_guest_off_through_the_acpi_power_button() {
    if !vmm_support::kvm_available() {
        return;
    }
    let s = serve(&[]);
    let addr = s.addr;
    let r = post(addr, VMIS, &guest_vmi("button", "wait")).await;
    assert_eq!(r.code(), 201, "{}", r.text());
    let vmi = wait_for(
        addr,
        &vmi_path("button"),
        "VMI Running",
        phase_is("Running"),
    )
    .await;
    // The guest found the power button's GPE method in our DSDT and armed the SCI.
    let mut console = Console::open(addr, "button").await;
    let text = console.until_line("acpi.sci_route").await.to_string();
    let report = common::guest::Report::parse(&text);
    assert_eq!(report.get("acpi.gpe_methods"), Some("0"), "{text}");
    assert_eq!(report.get("acpi.events"), Some("gpe:0"), "{text}");
    assert!(
        report
            .get("acpi.sci_route")
            .is_some_and(|r| r.ends_with(",ok")),
        "{text}"
    );

    let watch_path = format!(
        "{VMIS}?watch=true&fieldSelector=metadata.name%3Dbutton&resourceVersion={}",
        vmi["metadata"]["resourceVersion"]
            .as_str()
            .expect("resourceVersion")
    );
    let mut watch = Watch::start(addr, &watch_path, "application/json").await;
    // Accepted: the agent's finalizer holds the VMI until its guest is gone.
    assert_eq!(delete(addr, &vmi_path("button"), None).await.code(), 202);
    // The guest saw the button press and powers off by itself ...
    let text = console.until_line("acpi.event").await.to_string();
    let report = common::guest::Report::parse(&text);
    assert_eq!(report.get("acpi.event"), Some("gpe:0"), "{text}");
    // ... so the VMI ends Succeeded ("guest powered off"), not forced, and then goes.
    let mut last = Value::Null;
    while let Some(event) = watch.next().await {
        if event["type"] == "DELETED" {
            last = event["object"].clone();
            break;
        }
    }
    assert_eq!(last["status"]["phase"], "Succeeded", "{last}");
    let ready = condition(&last, "Ready").expect("Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["message"], "guest powered off", "{last}");
    wait_no_vm_threads(s.child.id()).await;
    assert!(run_dir_entries(s.dir.path()).is_empty());
    let events = get(addr, "/api/v1/namespaces/default/events").await.json();
    let messages: Vec<&str> = events["items"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["involvedObject"]["name"] == "button")
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(
        messages.contains(&"Signaled Deletion: guest powered off"),
        "{messages:?}"
    );
}

/// A `monovirt agent` process joining `server` as `node`, with its own data dir.
struct AgentProcess {
    child: Child,
    _dir: tempfile::TempDir,
}

impl AgentProcess {
    /// An agent joining `server` over plain HTTP.
    fn start(server: &BinaryServer, node: &str) -> Self {
        Self::start_at(server, &server.base(), &[], node)
    }

    /// An agent joining `server` at `url` with `extra` arguments.
    fn start_at(server: &BinaryServer, url: &str, extra: &[&str], node: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        import_image(dir.path());
        let token = join_token(server);
        let child = Command::new(env!("CARGO_BIN_EXE_monovirt"))
            .args(["agent", "--server", url, "--node-name", node])
            .args(extra)
            .args(["--heartbeat-interval", "500ms", "--data-dir"])
            .arg(dir.path())
            .env("MONOVIRT_TOKEN", token.trim())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn monovirt agent");
        Self { child, _dir: dir }
    }
}

/// The node join token `serve` wrote to its data dir.
fn join_token(server: &BinaryServer) -> String {
    std::fs::read_to_string(server.dir.path().join("join-token"))
        .unwrap_or_else(|_| "no-auth-yet".into())
        .trim()
        .to_string()
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn with_affinity(mut vm: Value, affinity: Value) -> Value {
    vm["spec"]["template"]["spec"]["affinity"] = affinity;
    vm
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_anti_affinity_unschedulable_and_failover() {
    if !vmm_support::kvm_available() {
        return;
    }
    let s = serve(&["--node-monitor-grace-period", "3s"]);
    let addr = s.addr;
    let mut agent = AgentProcess::start(&s, "node-b");
    for n in ["node-a", "node-b"] {
        wait_for(addr, &format!("/api/v1/nodes/{n}"), "node Ready", |v| {
            condition(v, "Ready").is_some_and(|c| c["status"] == "True")
        })
        .await;
    }

    // "b" prefers node-b; "a" must not share a host with "b".
    let b = with_affinity(
        guest_vm("b", "Always", "tick"),
        json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "preference": {"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["node-b"]}]}}]}}),
    );
    assert_eq!(post(addr, VMS, &b).await.code(), 201);
    let vmi_b = wait_for(addr, &vmi_path("b"), "b Running", phase_is("Running")).await;
    assert_eq!(vmi_b["status"]["nodeName"], "node-b");
    let a = with_affinity(
        guest_vm("a", "Always", "tick"),
        json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "b"}},
             "topologyKey": "kubernetes.io/hostname"}]}}),
    );
    assert_eq!(post(addr, VMS, &a).await.code(), 201);
    let vmi_a = wait_for(addr, &vmi_path("a"), "a Running", phase_is("Running")).await;
    assert_eq!(vmi_a["status"]["nodeName"], "node-a");
    // The remote node's guest shows its console through the API too.
    console_until(addr, "b", "tick=1").await;

    // Too big for either node: Pending, with the scheduler's reason per node.
    let mut big = guest_vm("big", "Always", "tick");
    big["spec"]["template"]["spec"]["domain"]["memory"]["guest"] = json!("64Ti");
    assert_eq!(post(addr, VMS, &big).await.code(), 201);
    let big_vmi = wait_for(addr, &vmi_path("big"), "big Unschedulable", |v| {
        condition(v, "PodScheduled").is_some_and(|c| c["status"] == "False")
    })
    .await;
    assert_eq!(big_vmi["status"]["phase"], "Pending");
    let cond = condition(&big_vmi, "PodScheduled").expect("PodScheduled");
    assert_eq!(cond["reason"], "Unschedulable");
    assert_eq!(
        cond["message"],
        "0/2 nodes are available: 2 Insufficient memory."
    );
    assert_eq!(delete(addr, &format!("{VMS}/big"), None).await.code(), 200);

    // Lose node-b: it turns NotReady after the grace period and "b" comes back on node-a
    // ("a" leaves first, so anti-affinity allows it).
    assert_eq!(delete(addr, &format!("{VMS}/a"), None).await.code(), 200);
    wait_for(addr, &vmi_path("a"), "a collected", Value::is_null).await;
    agent.child.kill().expect("kill the agent");
    agent.child.wait().expect("reap the agent");
    let lost = wait_for(addr, "/api/v1/nodes/node-b", "node-b NotReady", |v| {
        condition(v, "Ready").is_some_and(|c| c["status"] == "Unknown")
    })
    .await;
    assert_eq!(
        condition(&lost, "Ready").expect("Ready")["reason"],
        "NodeStatusUnknown"
    );
    let moved = wait_for(addr, &vmi_path("b"), "b back on node-a", |v| {
        v["status"]["nodeName"] == "node-a" && v["status"]["phase"] == "Running"
    })
    .await;
    assert_ne!(moved["metadata"]["uid"], vmi_b["metadata"]["uid"]);
    console_until(addr, "b", "tick=1").await;
    assert_eq!(delete(addr, &format!("{VMS}/b"), None).await.code(), 200);
    wait_for(addr, &vmi_path("b"), "b collected", Value::is_null).await;
    wait_no_vm_threads(s.child.id()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_joins_over_https_with_the_servers_ca_and_runs_a_vmi() {
    if !vmm_support::kvm_available() {
        return;
    }
    // A control plane only: the one node is the agent that joins over HTTPS.
    let dir = tempfile::tempdir().expect("tempdir");
    let s = BinaryServer::start_with(dir, &["--no-agent", "--tls-listen", "127.0.0.1:0"]);
    let addr = s.addr;
    let https = format!(
        "https://127.0.0.1:{}",
        s.https.expect("serve printed its HTTPS address").port()
    );
    let ca = s.dir.path().join("tls/ca.crt");

    // The server's certificate is verified: without its CA (public roots only) the
    // handshake fails; with it, the API answers.
    let untrusted =
        monovirt::client::Client::http_with_token(&https, Some(&join_token(&s))).expect("client");
    let nodes: monovirt::client::Api<Value> = monovirt::client::Api::all(
        untrusted,
        api::resource::find_kind("", "Node").expect("Node"),
    );
    let err = nodes
        .list(&Default::default())
        .await
        .expect_err("an unknown CA is refused");
    assert!(
        matches!(err, monovirt::client::ClientError::Tls(_)),
        "{err:?}"
    );

    let ca_arg = ca.to_str().expect("utf-8 path");
    let _agent = AgentProcess::start_at(&s, &https, &["--ca-file", ca_arg], "node-tls");
    wait_for(addr, "/api/v1/nodes/node-tls", "node-tls Ready", |v| {
        condition(v, "Ready").is_some_and(|c| c["status"] == "True")
    })
    .await;
    let r = post(addr, VMS, &guest_vm("secure", "Always", "tick")).await;
    assert_eq!(r.code(), 201, "{}", r.text());
    let vmi = wait_for(
        addr,
        &vmi_path("secure"),
        "VMI Running",
        phase_is("Running"),
    )
    .await;
    assert_eq!(vmi["status"]["nodeName"], "node-tls");
    console_until(addr, "secure", "tick=1").await;
    assert_eq!(
        delete(addr, &format!("{VMS}/secure"), None).await.code(),
        200
    );
    wait_for(addr, &vmi_path("secure"), "VMI collected", Value::is_null).await;
}
