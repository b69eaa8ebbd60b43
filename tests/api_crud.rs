//! The REST contract over real HTTP: create/get/list/update/patch/delete, conflicts,
//! patch types, selectors, pagination, validation and bad input.

mod common;

use common::api::*;
use hyper::Method;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_round_trip() {
    let s = TestServer::start();
    let a = s.addr;

    let r = post(a, VMS, &vm("vm1")).await;
    assert_eq!(r.code(), 201, "{}", r.text());
    let created = r.json();
    assert_eq!(created["metadata"]["namespace"], "default");
    assert!(created["metadata"]["uid"]
        .as_str()
        .is_some_and(|u| !u.is_empty()));
    assert!(created["metadata"]["creationTimestamp"].is_string());
    let rv1: u64 = created["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .parse()
        .expect("numeric rv");

    let r = get(a, &format!("{VMS}/vm1")).await;
    assert_eq!(r.code(), 200);
    assert_eq!(r.json()["metadata"]["uid"], created["metadata"]["uid"]);
    assert_eq!(r.json()["kind"], "VirtualMachine");

    let r = get(a, VMS).await;
    assert_eq!(r.code(), 200);
    let list = r.json();
    assert_eq!(list["kind"], "VirtualMachineList");
    assert_eq!(list["apiVersion"], "kubevirt.io/v1");
    assert_eq!(list["items"].as_array().expect("items").len(), 1);
    assert!(
        list["metadata"]["resourceVersion"]
            .as_str()
            .expect("rv")
            .parse::<u64>()
            .expect("n")
            >= rv1
    );

    // PUT with the current resourceVersion succeeds and bumps it.
    let mut upd = r.json()["items"][0].clone();
    upd["metadata"]["labels"]["tier"] = json!("gold");
    let r = put(a, &format!("{VMS}/vm1"), &upd).await;
    assert_eq!(r.code(), 200, "{}", r.text());
    let rv2: u64 = r.json()["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .parse()
        .expect("n");
    assert!(rv2 > rv1);

    // PUT with the stale one is a Conflict Status.
    let r = put(a, &format!("{VMS}/vm1"), &upd).await;
    assert_eq!(r.code(), 409);
    let st = r.json();
    assert_eq!(st["kind"], "Status");
    assert_eq!(st["reason"], "Conflict");
    assert_eq!(
        st["message"],
        "Operation cannot be fulfilled on virtualmachines.kubevirt.io \"vm1\": the object has been modified; please apply your changes to the latest version and try again"
    );

    // Creating it again: AlreadyExists.
    let r = post(a, VMS, &vm("vm1")).await;
    assert_eq!(r.code(), 409);
    assert_eq!(r.json()["reason"], "AlreadyExists");

    let r = delete(
        a,
        &format!("{VMS}/vm1"),
        Some(&json!({"propagationPolicy": "Background"})),
    )
    .await;
    assert_eq!(r.code(), 200, "{}", r.text());
    assert_eq!(r.json()["metadata"]["name"], "vm1");
    let r = get(a, &format!("{VMS}/vm1")).await;
    assert_eq!(r.code(), 404);
    assert_eq!(
        r.json()["message"],
        "virtualmachines.kubevirt.io \"vm1\" not found"
    );
    assert_eq!(r.json()["details"]["name"], "vm1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_types() {
    let s = TestServer::start();
    let a = s.addr;
    let path = format!("{VMS}/p1");
    assert_eq!(post(a, VMS, &vm("p1")).await.code(), 201);

    let r = patch(
        a,
        &path,
        "application/merge-patch+json",
        r#"{"metadata":{"labels":{"merge":"yes"}}}"#,
    )
    .await;
    assert_eq!(r.code(), 200, "{}", r.text());
    assert_eq!(r.json()["metadata"]["labels"]["merge"], "yes");
    assert_eq!(r.json()["metadata"]["labels"]["app"], "demo");

    let r = patch(a, &path, "application/json-patch+json", r#"[{"op":"add","path":"/metadata/labels/json","value":"yes"},{"op":"remove","path":"/metadata/labels/merge"}]"#).await;
    assert_eq!(r.code(), 200, "{}", r.text());
    assert_eq!(r.json()["metadata"]["labels"]["json"], "yes");
    assert!(r.json()["metadata"]["labels"].get("merge").is_none());

    // A JSON patch whose test fails changes nothing.
    let before = get(a, &path).await.json();
    let r = patch(a, &path, "application/json-patch+json", r#"[{"op":"test","path":"/metadata/labels/app","value":"other"},{"op":"add","path":"/metadata/labels/x","value":"y"}]"#).await;
    assert!(
        r.code() == 422 || r.code() == 400 || r.code() == 409,
        "{} {}",
        r.code(),
        r.text()
    );
    assert_eq!(
        get(a, &path).await.json()["metadata"]["resourceVersion"],
        before["metadata"]["resourceVersion"]
    );

    // Server-side apply creates when absent (YAML body) and updates when present.
    let yaml = "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata:\n  name: applied\nspec:\n  runStrategy: Halted\n  template:\n    spec:\n      domain:\n        devices: {}\n        resources:\n          requests:\n            memory: 64Mi\n";
    let r = request(
        a,
        Method::PATCH,
        &format!("{VMS}/applied?fieldManager=test"),
        &[("content-type", "application/apply-patch+yaml")],
        yaml.as_bytes().to_vec(),
    )
    .await;
    assert_eq!(r.code(), 201, "{}", r.text());
    let r = request(
        a,
        Method::PATCH,
        &format!("{VMS}/applied?fieldManager=test"),
        &[("content-type", "application/apply-patch+yaml")],
        yaml.replace("Halted", "Always").into_bytes(),
    )
    .await;
    assert_eq!(r.code(), 200, "{}", r.text());
    assert_eq!(r.json()["spec"]["runStrategy"], "Always");
    // Apply without a field manager is invalid.
    let r = request(
        a,
        Method::PATCH,
        &format!("{VMS}/applied"),
        &[("content-type", "application/apply-patch+yaml")],
        yaml.as_bytes().to_vec(),
    )
    .await;
    assert_eq!(r.code(), 422);

    // Strategic merge patch is for built-in kinds only: 415 for a custom resource.
    let r = patch(
        a,
        &path,
        "application/strategic-merge-patch+json",
        r#"{"metadata":{"labels":{"s":"1"}}}"#,
    )
    .await;
    assert_eq!(r.code(), 415, "{}", r.text());
    assert_eq!(r.json()["reason"], "UnsupportedMediaType");
    // ... and works on a built-in kind.
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "smp"}});
    assert_eq!(post(a, "/api/v1/namespaces", &ns).await.code(), 201);
    let r = patch(
        a,
        "/api/v1/namespaces/smp",
        "application/strategic-merge-patch+json",
        r#"{"metadata":{"labels":{"s":"1"}}}"#,
    )
    .await;
    assert_eq!(r.code(), 200, "{}", r.text());
    assert_eq!(r.json()["metadata"]["labels"]["s"], "1");

    // Unknown patch media type.
    assert_eq!(patch(a, &path, "text/plain", "{}").await.code(), 415);
    // Patching a missing object.
    assert_eq!(
        patch(
            a,
            &format!("{VMS}/missing"),
            "application/merge-patch+json",
            "{}"
        )
        .await
        .code(),
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_and_pagination() {
    let s = TestServer::start();
    let a = s.addr;
    for i in 0..5 {
        let mut v = vm(&format!("sel{i}"));
        v["metadata"]["labels"] = json!({"app": "demo", "idx": i.to_string(), "parity": if i % 2 == 0 { "even" } else { "odd" }});
        assert_eq!(post(a, VMS, &v).await.code(), 201);
    }
    let names = |r: &Resp| -> Vec<String> {
        r.json()["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| i["metadata"]["name"].as_str().expect("name").to_string())
            .collect()
    };
    let r = get(a, &format!("{VMS}?labelSelector=parity%3Deven")).await;
    assert_eq!(names(&r), ["sel0", "sel2", "sel4"]);
    let r = get(a, &format!("{VMS}?labelSelector=parity%21%3Deven")).await;
    assert_eq!(names(&r), ["sel1", "sel3"]);
    let r = get(a, &format!("{VMS}?labelSelector=idx%20in%20(1,4)")).await;
    assert_eq!(names(&r), ["sel1", "sel4"]);
    let r = get(
        a,
        &format!("{VMS}?labelSelector=idx%20notin%20(1,4),parity"),
    )
    .await;
    assert_eq!(names(&r), ["sel0", "sel2", "sel3"]);
    let r = get(a, &format!("{VMS}?labelSelector=%21nothere")).await;
    assert_eq!(names(&r).len(), 5);
    let r = get(a, &format!("{VMS}?fieldSelector=metadata.name%3Dsel3")).await;
    assert_eq!(names(&r), ["sel3"]);
    let r = get(a, &format!("{VMS}?labelSelector=%3D%3Dbad")).await;
    assert_eq!(r.code(), 400, "{}", r.text());

    // Pages of two, following continue tokens, see every object once.
    let mut seen = Vec::new();
    let mut cont = String::new();
    let mut pages = 0;
    loop {
        let q = if cont.is_empty() {
            format!("{VMS}?limit=2")
        } else {
            format!("{VMS}?limit=2&continue={cont}")
        };
        let r = get(a, &q).await;
        assert_eq!(r.code(), 200, "{}", r.text());
        let page = names(&r);
        assert!(page.len() <= 2);
        seen.extend(page);
        pages += 1;
        match r.json()["metadata"]["continue"].as_str() {
            Some(c) if !c.is_empty() => cont = c.to_string(),
            _ => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(seen, ["sel0", "sel1", "sel2", "sel3", "sel4"]);
    assert_eq!(pages, 3);
    assert_eq!(
        get(a, &format!("{VMS}?limit=2&continue=garbage"))
            .await
            .code(),
        400
    );

    // All namespaces.
    let r = get(a, "/apis/kubevirt.io/v1/virtualmachines").await;
    assert_eq!(names(&r).len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_and_bad_input() {
    let s = TestServer::start();
    let a = s.addr;

    // A disk that names no volume: 422 Invalid with a cause naming the field.
    let mut bad = vm("bad");
    bad["spec"]["template"]["spec"]["domain"]["devices"] =
        json!({"disks": [{"name": "root", "disk": {"bus": "virtio"}}]});
    let r = post(a, VMS, &bad).await;
    assert_eq!(r.code(), 422, "{}", r.text());
    let st = r.json();
    assert_eq!(st["reason"], "Invalid");
    let causes = st["details"]["causes"].as_array().expect("causes");
    assert!(
        causes.iter().any(|c| c["field"]
            .as_str()
            .is_some_and(|f| f.starts_with("spec.template.spec.domain.devices.disks[0]"))),
        "{st}"
    );
    assert_eq!(
        get(a, &format!("{VMS}/bad")).await.code(),
        404,
        "nothing half-written"
    );

    // Names must be DNS-1123.
    let r = post(a, VMS, &vm("Not_A_Name")).await;
    assert_eq!(r.code(), 422, "{}", r.text());
    assert!(r.json()["details"]["causes"]
        .as_array()
        .expect("causes")
        .iter()
        .any(|c| c["field"] == "metadata.name"));

    // Unknown fields: Strict → 400, Warn → 2xx + Warning header, Ignore → dropped silently.
    let mut extra = vm("strict");
    extra["spec"]["foo"] = json!(1);
    let r = post(a, &format!("{VMS}?fieldValidation=Strict"), &extra).await;
    assert_eq!(r.code(), 400, "{}", r.text());
    assert_eq!(r.json()["reason"], "BadRequest");
    assert!(
        r.json()["message"]
            .as_str()
            .expect("msg")
            .contains(r#"strict decoding error: unknown field "spec.foo""#),
        "{}",
        r.text()
    );
    let r = post(a, &format!("{VMS}?fieldValidation=Warn"), &extra).await;
    assert_eq!(r.code(), 201, "{}", r.text());
    let w = r
        .headers
        .get("warning")
        .expect("Warning header")
        .to_str()
        .expect("ascii");
    assert_eq!(w, r#"299 - "unknown field \"spec.foo\"""#);
    assert!(r.json()["spec"].get("foo").is_none());
    extra["metadata"]["name"] = json!("ignored");
    let r = post(a, &format!("{VMS}?fieldValidation=Ignore"), &extra).await;
    assert_eq!(r.code(), 201);
    assert!(r.headers.get("warning").is_none());

    // Malformed JSON and YAML: 400.
    let r = request(
        a,
        Method::POST,
        VMS,
        &[("content-type", "application/json")],
        b"{\"apiVersion\": ".to_vec(),
    )
    .await;
    assert_eq!(r.code(), 400);
    assert_eq!(r.json()["kind"], "Status");
    let r = request(
        a,
        Method::POST,
        VMS,
        &[("content-type", "application/yaml")],
        b"metadata: [unclosed".to_vec(),
    )
    .await;
    assert_eq!(r.code(), 400);

    // YAML create works.
    let yaml = "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata:\n  name: fromyaml\nspec:\n  runStrategy: Halted\n  template:\n    spec:\n      domain:\n        devices: {}\n        resources:\n          requests:\n            memory: 64Mi\n";
    let r = request(
        a,
        Method::POST,
        VMS,
        &[("content-type", "application/yaml")],
        yaml.as_bytes().to_vec(),
    )
    .await;
    assert_eq!(r.code(), 201, "{}", r.text());

    // Wrong apiVersion or kind: 400.
    let mut wrong = vm("wrong");
    wrong["apiVersion"] = json!("kubevirt.io/v2");
    assert_eq!(post(a, VMS, &wrong).await.code(), 400);
    let mut wrong = vm("wrong");
    wrong["kind"] = json!("VirtualMachineInstance");
    assert_eq!(post(a, VMS, &wrong).await.code(), 400);

    // Over 3 MiB: 413.
    let mut big = vm("big");
    big["metadata"]["annotations"] = json!({"blob": "x".repeat(3 * 1024 * 1024 + 1)});
    let r = post(a, VMS, &big).await;
    assert_eq!(r.code(), 413);
    assert_eq!(r.json()["reason"], "RequestEntityTooLarge");

    // A resourceVersion that is not a number.
    assert_eq!(
        get(a, &format!("{VMS}?resourceVersion=abc")).await.code(),
        400
    );
    let mut upd = get(a, &format!("{VMS}/fromyaml")).await.json();
    upd["metadata"]["resourceVersion"] = json!("abc");
    let r = put(a, &format!("{VMS}/fromyaml"), &upd).await;
    assert!(
        r.code() == 400 || r.code() == 409 || r.code() == 422,
        "{} {}",
        r.code(),
        r.text()
    );

    // A missing namespace is refused.
    let r = post(
        a,
        "/apis/kubevirt.io/v1/namespaces/nowhere/virtualmachines",
        &vm("lost"),
    )
    .await;
    assert_eq!(r.code(), 404, "{}", r.text());

    // Unknown paths and verbs.
    assert_eq!(
        get(a, "/apis/kubevirt.io/v1/namespaces/default/nothings")
            .await
            .code(),
        404
    );
    assert_eq!(
        post(a, "/apis/kubevirt.io/v1/virtualmachines", &vm("x"))
            .await
            .code(),
        405
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_subresource() {
    let s = TestServer::start();
    let a = s.addr;
    assert_eq!(post(a, VMS, &vm("st")).await.code(), 201);
    // The main resource ignores status.
    let r = patch(
        a,
        &format!("{VMS}/st"),
        "application/merge-patch+json",
        r#"{"status":{"printableStatus":"Running"}}"#,
    )
    .await;
    assert_eq!(r.code(), 200);
    assert_ne!(r.json()["status"]["printableStatus"], "Running");
    // /status changes only status.
    let r = patch(
        a,
        &format!("{VMS}/st/status"),
        "application/merge-patch+json",
        r#"{"status":{"printableStatus":"Running"},"metadata":{"labels":{"no":"pe"}}}"#,
    )
    .await;
    assert_eq!(r.code(), 200, "{}", r.text());
    assert_eq!(r.json()["status"]["printableStatus"], "Running");
    assert!(r.json()["metadata"]["labels"].get("no").is_none());
    let r = get(a, &format!("{VMS}/st/status")).await;
    assert_eq!(r.json()["status"]["printableStatus"], "Running");
    assert_eq!(get(a, &format!("{VMS}/st/bogus")).await.code(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_for_kubectl() {
    let s = TestServer::start();
    let a = s.addr;
    assert_eq!(post(a, VMS, &vm("t1")).await.code(), 201);
    let tbl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    let r = request(
        a,
        Method::GET,
        &format!("{VMS}?limit=500"),
        &[("accept", tbl)],
        Vec::new(),
    )
    .await;
    assert_eq!(r.code(), 200);
    let t = r.json();
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
    assert!(t["metadata"]["resourceVersion"].is_string());
    let cols: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .expect("cols")
        .iter()
        .map(|c| c["name"].as_str().expect("n"))
        .collect();
    assert_eq!(cols[0], "Name");
    assert!(cols.contains(&"Age"));
    let row = &t["rows"][0];
    assert_eq!(row["cells"][0], "t1");
    let age_idx = cols.iter().position(|c| *c == "Age").expect("age");
    let age = row["cells"][age_idx].as_str().expect("age string");
    assert!(
        age.ends_with('s') || age.ends_with('m'),
        "age {age:?} is a HumanDuration"
    );
    assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(row["object"]["metadata"]["namespace"], "default");
    let r = request(
        a,
        Method::GET,
        &format!("{VMS}?includeObject=Object"),
        &[("accept", tbl)],
        Vec::new(),
    )
    .await;
    assert_eq!(r.json()["rows"][0]["object"]["kind"], "VirtualMachine");
    let r = request(
        a,
        Method::GET,
        &format!("{VMS}/t1"),
        &[("accept", tbl)],
        Vec::new(),
    )
    .await;
    assert_eq!(r.json()["rows"].as_array().expect("rows").len(), 1);

    // describe's event lookup: an (empty) EventList, JSON even when protobuf is offered first.
    let r = request(
        a,
        Method::GET,
        "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dt1&limit=500",
        &[(
            "accept",
            "application/vnd.kubernetes.protobuf,application/json",
        )],
        Vec::new(),
    )
    .await;
    assert_eq!(r.code(), 200, "{}", r.text());
    assert_eq!(r.json()["kind"], "EventList");
    assert_eq!(r.headers["content-type"], "application/json");
    let _: Value = r.json();
}
