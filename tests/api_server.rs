//! The server as a whole: `monovirt serve` (the real binary) prints its address, serves
//! TCP and the Unix socket, keeps data across restarts and stops cleanly on SIGTERM;
//! discovery, OpenAPI, health and metrics over real HTTP; the client over both transports.

mod common;

use common::api::*;
use futures_util::StreamExt;
use hyper::Method;
use monovirt::client::{Api, Client, Deletion, Event};
use monovirt::store::{DeleteOptions, ListOptions, Patch, WriteOptions};
use serde_json::{json, Value};
use std::process::Command;

#[test]
fn serve_binary_lifecycle_and_unix_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_path_buf();
    let mut s = BinaryServer::start_in(dir);
    let sock = data.join("monovirt.sock");
    assert!(sock.exists(), "socket at <data-dir>/monovirt.sock");
    let out = Command::new("curl")
        .args(["-sS", "--fail-with-body", "--unix-socket"])
        .arg(&sock)
        .args(["-H", "Content-Type: application/json", "-d"])
        .arg(vm("persisted").to_string())
        .arg(format!("http://localhost{VMS}"))
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let created: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(created["metadata"]["name"], "persisted");

    let status = s.terminate();
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
    assert!(!sock.exists(), "socket removed on shutdown");

    // Same data dir again: the object is still there.
    let dir = std::mem::replace(&mut s.dir, tempfile::tempdir().expect("tempdir"));
    let s2 = BinaryServer::start_in(dir);
    let out = Command::new("curl")
        .args(["-sS", "--fail-with-body"])
        .arg(format!("{}{VMS}/persisted", s2.base()))
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let got: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(got["metadata"]["uid"], created["metadata"]["uid"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_openapi_health_metrics() {
    let s = TestServer::start();
    let a = s.addr;
    let agg = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
    let r = request(a, Method::GET, "/apis", &[("accept", agg)], Vec::new()).await;
    assert_eq!(
        r.headers["content-type"],
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    );
    let groups: Vec<String> = r.json()["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|g| g["metadata"]["name"].as_str().expect("n").to_string())
        .collect();
    assert!(groups.contains(&"kubevirt.io".to_string()), "{groups:?}");
    assert!(
        groups.contains(&"cdi.kubevirt.io".to_string()),
        "{groups:?}"
    );
    let kv = r.json()["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|g| g["metadata"]["name"] == "kubevirt.io")
        .cloned()
        .expect("kubevirt.io");
    let vm = kv["versions"][0]["resources"]
        .as_array()
        .expect("res")
        .iter()
        .find(|r| r["resource"] == "virtualmachines")
        .cloned()
        .expect("vms");
    assert_eq!(vm["shortNames"], json!(["vm", "vms"]));
    assert_eq!(vm["responseKind"]["kind"], "VirtualMachine");
    let r = request(a, Method::GET, "/api", &[("accept", agg)], Vec::new()).await;
    let core = r.json()["items"][0]["versions"][0]["resources"].clone();
    let nodes = core
        .as_array()
        .expect("core")
        .iter()
        .find(|r| r["resource"] == "nodes")
        .cloned()
        .expect("nodes");
    assert_eq!(nodes["scope"], "Cluster");

    let r = get(a, "/apis/kubevirt.io/v1").await;
    let list = r.json();
    let names: Vec<&str> = list["resources"]
        .as_array()
        .expect("res")
        .iter()
        .map(|r| r["name"].as_str().expect("n"))
        .collect();
    assert!(names.contains(&"virtualmachines/status"), "{names:?}");
    let v = get(a, "/version").await.json();
    assert_eq!(
        (v["major"].as_str(), v["minor"].as_str()),
        (Some("1"), Some("32"))
    );

    let idx = get(a, "/openapi/v3").await.json();
    let url = idx["paths"]["apis/kubevirt.io/v1"]["serverRelativeURL"]
        .as_str()
        .expect("url")
        .to_string();
    let doc = get(a, &url).await;
    assert!(doc.headers["cache-control"]
        .to_str()
        .expect("cc")
        .contains("immutable"));
    let doc = doc.json();
    let schema = &doc["components"]["schemas"]["io.kubevirt.v1.VirtualMachine"];
    assert_eq!(
        schema["x-kubernetes-group-version-kind"][0]["kind"],
        "VirtualMachine"
    );
    assert!(
        schema["properties"]["spec"]["properties"]["runStrategy"].is_object(),
        "real schema served"
    );
    assert_eq!(get(a, "/openapi/v2").await.code(), 404);

    for p in ["/healthz", "/readyz", "/livez"] {
        assert_eq!(get(a, p).await.text(), "ok");
    }
    let _ = get(a, VMS).await;
    let _ = get(a, &format!("{VMS}/nope")).await;
    let m = get(a, "/metrics").await.text();
    assert!(
        m.contains(
            r#"apiserver_request_total{verb="list",resource="virtualmachines",code="200"} "#
        ),
        "{m}"
    );
    assert!(
        m.contains(
            r#"apiserver_request_total{verb="get",resource="virtualmachines",code="404"} 1"#
        ),
        "{m}"
    );
    assert!(
        m.contains("apiserver_request_duration_seconds_bucket{"),
        "{m}"
    );
}

fn vm_def() -> &'static api::resource::ResourceDef {
    api::resource::resources()
        .iter()
        .find(|d| d.kind == "VirtualMachine")
        .expect("VirtualMachine registered")
}

/// The same sequence through each transport gives the same results.
async fn exercise(client: Client, tag: &str) {
    let vms: Api<Value> = Api::namespaced(client, vm_def(), "default");
    let name = format!("client-{tag}");
    let mut w = vms
        .watch(&ListOptions {
            field_selector: Some(format!("metadata.name={name}")),
            ..ListOptions::default()
        })
        .await
        .expect("watch");
    let created = vms
        .create(&vm(&name), &WriteOptions::default())
        .await
        .expect("create");
    assert_eq!(created["metadata"]["namespace"], "default");
    match w.next().await.expect("event").expect("ok") {
        Event::Added(o) => assert_eq!(o["metadata"]["name"], name.as_str()),
        other => panic!("{other:?}"),
    }
    let err = vms
        .create(&vm(&name), &WriteOptions::default())
        .await
        .expect_err("exists");
    assert_eq!(err.code(), Some(409));
    let patched = vms
        .patch(
            &name,
            Patch::Merge(json!({"metadata": {"labels": {"via": tag}}})),
            &WriteOptions::default(),
        )
        .await
        .expect("patch");
    assert_eq!(patched["metadata"]["labels"]["via"], tag);
    match w.next().await.expect("event").expect("ok") {
        Event::Modified(o) => assert_eq!(o["metadata"]["labels"]["via"], tag),
        other => panic!("{other:?}"),
    }
    let list = vms
        .list(&ListOptions {
            label_selector: Some(format!("via={tag}")),
            ..ListOptions::default()
        })
        .await
        .expect("list");
    assert_eq!(list.items.len(), 1);
    let mut bad = vm("Bad_Name");
    bad["metadata"]["name"] = json!("Bad_Name");
    let err = vms
        .create(&bad, &WriteOptions::default())
        .await
        .expect_err("invalid");
    assert_eq!(err.code(), Some(422));
    match vms
        .delete(&name, &DeleteOptions::default())
        .await
        .expect("delete")
    {
        Deletion::Removed(o) => assert_eq!(o["metadata"]["name"], name.as_str()),
        Deletion::Pending(o) => panic!("no finalizers, yet pending: {o}"),
    }
    assert!(vms.get_opt(&name).await.expect("get").is_none());
    match w.next().await.expect("event").expect("ok") {
        Event::Deleted(o) => assert_eq!(o["metadata"]["name"], name.as_str()),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_local_tcp_and_unix_socket_agree() {
    let s = TestServer::start();
    exercise(Client::local(s.objects.clone()), "local").await;
    exercise(Client::http(&s.base()).expect("tcp"), "tcp").await;
    exercise(
        Client::http(&format!("unix:{}", s.socket.display())).expect("unix"),
        "unix",
    )
    .await;
}
