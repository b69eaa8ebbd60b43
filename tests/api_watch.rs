//! Watch over real HTTP: the synthetic ADDED from rv 0, resume from a resourceVersion,
//! `fieldSelector=metadata.name`, bookmarks, Table events, 410 Expired, timeouts.

mod common;

use common::api::*;
use monovirt::store::StoreConfig;
use serde_json::json;

const TBL: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_zero_then_changes() {
    let s = TestServer::start();
    let a = s.addr;
    assert_eq!(post(a, VMS, &vm("w1")).await.code(), 201);
    assert_eq!(post(a, VMS, &vm("w2")).await.code(), 201);

    let mut w = Watch::start(
        a,
        &format!("{VMS}?watch=true&resourceVersion=0"),
        "application/json",
    )
    .await;
    assert_eq!(w.status.as_u16(), 200);
    assert_eq!(w.headers["content-type"], "application/json");
    let mut added = Vec::new();
    for _ in 0..2 {
        let ev = w.next().await.expect("event");
        assert_eq!(ev["type"], "ADDED");
        added.push(
            ev["object"]["metadata"]["name"]
                .as_str()
                .expect("name")
                .to_string(),
        );
    }
    added.sort();
    assert_eq!(added, ["w1", "w2"]);

    let r = patch(
        a,
        &format!("{VMS}/w1"),
        "application/merge-patch+json",
        r#"{"metadata":{"labels":{"x":"1"}}}"#,
    )
    .await;
    assert_eq!(r.code(), 200);
    let ev = w.next().await.expect("event");
    assert_eq!(ev["type"], "MODIFIED");
    assert_eq!(ev["object"]["metadata"]["labels"]["x"], "1");
    assert_eq!(ev["object"]["kind"], "VirtualMachine");

    assert_eq!(delete(a, &format!("{VMS}/w2"), None).await.code(), 200);
    let ev = w.next().await.expect("event");
    assert_eq!(ev["type"], "DELETED");
    assert_eq!(ev["object"]["metadata"]["name"], "w2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_from_resource_version_and_name_selector() {
    let s = TestServer::start();
    let a = s.addr;
    assert_eq!(post(a, VMS, &vm("r1")).await.code(), 201);
    let list = get(a, VMS).await.json();
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();
    // Changes after the list: only these arrive, in order.
    assert_eq!(post(a, VMS, &vm("r2")).await.code(), 201);
    assert_eq!(
        patch(
            a,
            &format!("{VMS}/r1"),
            "application/merge-patch+json",
            r#"{"metadata":{"labels":{"y":"2"}}}"#
        )
        .await
        .code(),
        200
    );
    let mut w = Watch::start(
        a,
        &format!("{VMS}?watch=true&resourceVersion={rv}"),
        "application/json",
    )
    .await;
    let e1 = w.next().await.expect("event");
    assert_eq!(
        (
            e1["type"].as_str(),
            e1["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("r2"))
    );
    let e2 = w.next().await.expect("event");
    assert_eq!(
        (
            e2["type"].as_str(),
            e2["object"]["metadata"]["name"].as_str()
        ),
        (Some("MODIFIED"), Some("r1"))
    );

    // kubectl delete's wait: only the named object's events.
    let mut named = Watch::start(a, &format!("{VMS}?fieldSelector=metadata.name%3Dr1&resourceVersion={rv}&allowWatchBookmarks=true&watch=true"), "application/json").await;
    let ev = named.next().await.expect("event");
    assert_eq!(ev["object"]["metadata"]["name"], "r1");
    assert_eq!(delete(a, &format!("{VMS}/r2"), None).await.code(), 200);
    assert_eq!(delete(a, &format!("{VMS}/r1"), None).await.code(), 200);
    loop {
        let ev = named.next().await.expect("event");
        if ev["type"] == "BOOKMARK" {
            continue;
        }
        assert_eq!(ev["object"]["metadata"]["name"], "r1", "{ev}");
        if ev["type"] == "DELETED" {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_watch_events_for_get_w() {
    let s = TestServer::start();
    let a = s.addr;
    assert_eq!(post(a, VMS, &vm("tw")).await.code(), 201);
    let mut w = Watch::start(
        a,
        &format!("{VMS}?fieldSelector=metadata.name%3Dtw&resourceVersion=0&watch=true"),
        TBL,
    )
    .await;
    let ev = w.next().await.expect("event");
    assert_eq!(ev["type"], "ADDED");
    assert_eq!(ev["object"]["kind"], "Table");
    assert_eq!(ev["object"]["rows"].as_array().expect("rows").len(), 1);
    assert_eq!(ev["object"]["rows"][0]["cells"][0], "tw");
    assert_eq!(ev["object"]["columnDefinitions"][0]["name"], "Name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_old_resource_version_is_410_and_timeouts_end_streams() {
    let s = TestServer::start_with(StoreConfig {
        log_retention: 2,
        ..StoreConfig::default()
    });
    let a = s.addr;
    for i in 0..6 {
        let mut v = vm("old");
        v["metadata"]["name"] = json!(format!("old{i}"));
        assert_eq!(post(a, VMS, &v).await.code(), 201);
    }
    s.objects.compact().expect("compact");
    let w = Watch::start(
        a,
        &format!("{VMS}?watch=true&resourceVersion=1"),
        "application/json",
    )
    .await;
    assert_eq!(w.status.as_u16(), 410);
    let st = w.rest().await;
    assert_eq!(st["kind"], "Status");
    assert_eq!(st["reason"], "Expired");
    assert_eq!(st["code"], 410);

    // timeoutSeconds ends the stream cleanly.
    let mut w = Watch::start(
        a,
        &format!(
            "{VMS}?watch=true&timeoutSeconds=1&resourceVersion={}",
            s.objects.revision()
        ),
        "application/json",
    )
    .await;
    assert_eq!(w.status.as_u16(), 200);
    while let Some(ev) = w.next().await {
        assert_eq!(ev["type"], "BOOKMARK", "no changes were made: {ev}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_watches() {
    let s = TestServer::start();
    let a = s.addr;
    let mut w = Watch::start(a, &format!("{VMS}?watch=true"), "application/json").await;
    assert_eq!(w.status.as_u16(), 200);
    drop(s);
    assert!(
        w.next().await.is_none(),
        "the stream ends when the server stops"
    );
}
