//! Deletion over real HTTP: finalizers and deletionTimestamp, preconditions, and garbage
//! collection of dependents through ownerReferences (Background, Foreground, Orphan).

mod common;

use common::api::*;
use serde_json::{json, Value};

fn vmi_owned_by(name: &str, owner: &Value) -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": name, "ownerReferences": [{
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
            "controller": true, "blockOwnerDeletion": true
        }]},
        "spec": {"domain": {"devices": {}, "resources": {"requests": {"memory": "64Mi"}}}}
    })
}

/// Polls (bounded) until `path` is 404; returns whether it went away.
async fn gone(a: std::net::SocketAddr, path: &str) -> bool {
    for _ in 0..200 {
        if get(a, path).await.code() == 404 {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizers_hold_the_object() {
    let s = TestServer::start();
    let a = s.addr;
    let mut v = vm("fin");
    v["metadata"]["finalizers"] = json!(["example.com/hold"]);
    assert_eq!(post(a, VMS, &v).await.code(), 201);
    let r = delete(a, &format!("{VMS}/fin"), None).await;
    assert_eq!(r.code(), 202, "{}", r.text());
    assert!(r.json()["metadata"]["deletionTimestamp"].is_string());
    let still = get(a, &format!("{VMS}/fin")).await;
    assert_eq!(still.code(), 200);
    assert!(still.json()["metadata"]["deletionTimestamp"].is_string());
    let r = patch(
        a,
        &format!("{VMS}/fin"),
        "application/merge-patch+json",
        r#"{"metadata":{"finalizers":null}}"#,
    )
    .await;
    assert!(r.code() == 200, "{}", r.text());
    assert!(gone(a, &format!("{VMS}/fin")).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_preconditions() {
    let s = TestServer::start();
    let a = s.addr;
    let created = post(a, VMS, &vm("pre")).await.json();
    let r = delete(
        a,
        &format!("{VMS}/pre"),
        Some(&json!({"preconditions": {"uid": "not-the-uid"}})),
    )
    .await;
    assert_eq!(r.code(), 409, "{}", r.text());
    let r = delete(
        a,
        &format!("{VMS}/pre"),
        Some(&json!({"preconditions": {"resourceVersion": "999999"}})),
    )
    .await;
    assert_eq!(r.code(), 409, "{}", r.text());
    let r = delete(
        a,
        &format!("{VMS}/pre"),
        Some(&json!({"preconditions": {"uid": created["metadata"]["uid"]}})),
    )
    .await;
    assert_eq!(r.code(), 200, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_follows_owner_references() {
    let s = TestServer::start();
    let a = s.addr;

    // Background: the owner goes at once, the dependent after it.
    let owner = post(a, VMS, &vm("gc-bg")).await.json();
    let r = post(a, VMIS, &vmi_owned_by("gc-bg", &owner)).await;
    assert_eq!(r.code(), 201, "{}", r.text());
    assert_eq!(
        delete(
            a,
            &format!("{VMS}/gc-bg"),
            Some(&json!({"propagationPolicy": "Background"}))
        )
        .await
        .code(),
        200
    );
    assert!(
        gone(a, &format!("{VMIS}/gc-bg")).await,
        "dependent collected"
    );

    // Foreground: dependents first, then the owner.
    let owner = post(a, VMS, &vm("gc-fg")).await.json();
    assert_eq!(
        post(a, VMIS, &vmi_owned_by("gc-fg", &owner)).await.code(),
        201
    );
    let r = delete(
        a,
        &format!("{VMS}/gc-fg"),
        Some(&json!({"propagationPolicy": "Foreground"})),
    )
    .await;
    assert!(r.code() == 200 || r.code() == 202, "{}", r.text());
    assert!(gone(a, &format!("{VMIS}/gc-fg")).await);
    assert!(gone(a, &format!("{VMS}/gc-fg")).await);

    // Orphan: the dependent stays, without its ownerReference.
    let owner = post(a, VMS, &vm("gc-or")).await.json();
    assert_eq!(
        post(a, VMIS, &vmi_owned_by("gc-or", &owner)).await.code(),
        201
    );
    let r = delete(
        a,
        &format!("{VMS}/gc-or"),
        Some(&json!({"propagationPolicy": "Orphan"})),
    )
    .await;
    assert!(r.code() == 200 || r.code() == 202, "{}", r.text());
    assert!(gone(a, &format!("{VMS}/gc-or")).await);
    let dep = get(a, &format!("{VMIS}/gc-or")).await;
    assert_eq!(dep.code(), 200);
    let refs = dep.json()["metadata"]["ownerReferences"].clone();
    assert!(
        refs.is_null() || refs.as_array().is_some_and(Vec::is_empty),
        "{refs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_deletes_its_objects() {
    let s = TestServer::start();
    let a = s.addr;
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "doomed"}});
    assert_eq!(post(a, "/api/v1/namespaces", &ns).await.code(), 201);
    let path = "/apis/kubevirt.io/v1/namespaces/doomed/virtualmachines";
    assert_eq!(post(a, path, &vm("inside")).await.code(), 201);
    let r = delete(a, "/api/v1/namespaces/doomed", None).await;
    assert!(r.code() == 200 || r.code() == 202, "{}", r.text());
    assert!(gone(a, &format!("{path}/inside")).await);
    assert!(gone(a, "/api/v1/namespaces/doomed").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_collection_by_label() {
    let s = TestServer::start();
    let a = s.addr;
    for (n, l) in [("dc1", "x"), ("dc2", "x"), ("dc3", "y")] {
        let mut v = vm(n);
        v["metadata"]["labels"] = json!({"grp": l});
        assert_eq!(post(a, VMS, &v).await.code(), 201);
    }
    let r = delete(a, &format!("{VMS}?labelSelector=grp%3Dx"), None).await;
    assert_eq!(r.code(), 200, "{}", r.text());
    assert_eq!(r.json()["items"].as_array().expect("items").len(), 2);
    assert_eq!(get(a, &format!("{VMS}/dc3")).await.code(), 200);
    assert_eq!(get(a, &format!("{VMS}/dc1")).await.code(), 404);
}
