//! Storage against a real `monovirt serve`: the local provisioner, CDI-style imports from a
//! loopback HTTP server (raw, qcow2, gzip, xz, checksums, basic auth, progress), clones,
//! blanks, uploads, failures (404, refused, truncated, bad checksum, not an image, too
//! large, full filesystem), the protection finalizer and reclaim.

mod common;
mod storage_support;

use common::api::BinaryServer;
use monovirt::client::{Api, Client};
use monovirt::store::{DeleteOptions, WriteOptions};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};
use storage_support::{
    entries, issue_manifest, pattern, qcow2_from, run, s, sha256, sha256_prefix, ImageServer,
    IMPORT_PHASE,
};

const MIB: usize = 1 << 20;

struct Env {
    server: BinaryServer,
    client: Client,
}

impl Env {
    fn start() -> Self {
        let server = BinaryServer::start();
        let client = Client::http(&server.base()).expect("client");
        Self { server, client }
    }

    fn api(&self, group: &str, kind: &str) -> Api<Value> {
        let def = api::resource::find_kind(group, kind).expect("served");
        if def.namespaced {
            Api::namespaced(self.client.clone(), def, "default")
        } else {
            Api::all(self.client.clone(), def)
        }
    }

    fn pvcs(&self) -> Api<Value> {
        self.api("", "PersistentVolumeClaim")
    }

    fn dvs(&self) -> Api<Value> {
        self.api("cdi.kubevirt.io", "DataVolume")
    }

    async fn create(&self, group: &str, kind: &str, obj: Value) -> Value {
        self.api(group, kind)
            .create(&obj, &WriteOptions::default())
            .await
            .unwrap_or_else(|e| panic!("creating {kind}: {e}"))
    }

    /// Creates DataVolume `name` of `size` filled from `source`.
    async fn create_dv(&self, name: &str, source: Value, size: &str) -> Value {
        self.create("cdi.kubevirt.io", "DataVolume", dv(name, source, size))
            .await
    }

    async fn class(&self, name: &str, path: &Path) {
        self.create(
            "storage.k8s.io",
            "StorageClass",
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                "metadata": {"name": name}, "provisioner": "monovirt.io/local",
                "parameters": {"path": path.display().to_string()}}),
        )
        .await;
    }

    /// Polls `api`'s object `name` until `done` holds (60 s at most, then panics).
    async fn wait(
        &self,
        api: &Api<Value>,
        name: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut last = Value::Null;
        while Instant::now() < deadline {
            if let Ok(Some(v)) = api.get_opt(name).await {
                if done(&v) {
                    return v;
                }
                last = v;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{name}: {what} never happened; last state: {last:#}");
    }

    async fn dv_phase(&self, name: &str, phase: &str) -> Value {
        self.wait(&self.dvs(), name, &format!("phase {phase}"), |v| {
            s(v, "/status/phase") == phase
        })
        .await
    }

    async fn gone(&self, api: &Api<Value>, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if api.get_opt(name).await.expect("get").is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{name} was never deleted");
    }

    /// The directory of the PV bound to claim `name`.
    async fn volume_dir(&self, name: &str) -> std::path::PathBuf {
        let pvc = self.pvcs().get(name).await.expect("pvc");
        let pv = self
            .api("", "PersistentVolume")
            .get(s(&pvc, "/spec/volumeName"))
            .await
            .expect("pv");
        std::path::PathBuf::from(s(&pv, "/spec/hostPath/path"))
    }
}

/// Waits (60 s at most) until a volume's directory `dir` is gone.
async fn reclaimed(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while dir.exists() {
        assert!(Instant::now() < deadline, "{dir:?} was never reclaimed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn dv(name: &str, source: Value, size: &str) -> Value {
    json!({"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"source": source, "storage": {"resources": {"requests": {"storage": size}}}}})
}

fn condition<'a>(v: &'a Value, type_: &str) -> &'a Value {
    v["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_issue_manifest_imports_a_qcow2_into_ocs_gold_and_reclaim_deletes_it() {
    let env = Env::start();
    let work = tempfile::tempdir().expect("tempdir");
    let images = work.path().join("images");
    std::fs::create_dir(&images).expect("mkdir");
    let raw = pattern(6 * MIB, 1);
    std::fs::write(work.path().join("src.raw"), &raw).expect("write");
    qcow2_from(&work.path().join("src.raw"), &images.join("Fedora.qcow2"));
    let srv = ImageServer::start(images.clone()).await;
    let gold = work.path().join("gold");
    env.class("ocs-gold", &gold).await;
    // The default class exists and is marked as the default.
    let local = env
        .api("storage.k8s.io", "StorageClass")
        .get("local")
        .await
        .expect("default class");
    assert_eq!(
        s(
            &local,
            "/metadata/annotations/storageclass.kubernetes.io~1is-default-class"
        ),
        "true"
    );

    let mut pvc = issue_manifest(&srv.url("images", "Fedora.qcow2"));
    pvc["metadata"]["namespace"] = json!("default");
    env.create("", "PersistentVolumeClaim", pvc).await;
    let done = env
        .wait(&env.pvcs(), "fedora-disk0", "import success", |v| {
            s(v, IMPORT_PHASE) == "Succeeded"
        })
        .await;
    assert_eq!(s(&done, "/status/phase"), "Bound");
    assert_eq!(s(&done, "/status/capacity/storage"), "20Gi");
    assert!(done["metadata"]["finalizers"]
        .as_array()
        .expect("finalizers")
        .contains(&json!("kubernetes.io/pvc-protection")));
    let dir = env.volume_dir("fedora-disk0").await;
    assert!(dir.starts_with(&gold), "{dir:?} not under {gold:?}");
    let disk = dir.join("disk.img");
    let meta = std::fs::metadata(&disk).expect("disk.img");
    assert_eq!(meta.len(), 20 << 30, "grown to the claim's size");
    assert!(
        monovirt::storage::sparse::allocated(&disk).expect("blocks") < 64 << 20,
        "sparse"
    );
    assert_eq!(sha256_prefix(&disk, raw.len()), sha256(&raw));
    assert!(
        std::fs::read_dir(&dir).expect("dir").count() == 1,
        "only disk.img remains"
    );

    // reclaimPolicy Delete: the claim goes, the PV and the directory follow.
    let pv = s(&done, "/spec/volumeName").to_string();
    env.pvcs()
        .delete("fedora-disk0", &DeleteOptions::default())
        .await
        .expect("delete");
    env.gone(&env.pvcs(), "fedora-disk0").await;
    env.gone(&env.api("", "PersistentVolume"), &pv).await;
    assert!(!dir.exists(), "volume directory removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datavolumes_import_raw_gzip_xz_auth_clone_blank_with_checksums_and_progress() {
    let env = Env::start();
    let work = tempfile::tempdir().expect("tempdir");
    let images = work.path().to_path_buf();
    let raw = pattern(8 * MIB, 2);
    std::fs::write(images.join("disk.raw"), &raw).expect("write");
    run(
        "gzip",
        &["-k", "-1", &images.join("disk.raw").display().to_string()],
    );
    run(
        "xz",
        &[
            "-k",
            "-0",
            "-T1",
            &images.join("disk.raw").display().to_string(),
        ],
    );
    let gz = std::fs::read(images.join("disk.raw.gz")).expect("gz");
    let xz = std::fs::read(images.join("disk.raw.xz")).expect("xz");
    let md5 = {
        use md5::Digest;
        monovirt::storage::checksum::hex(&md5::Md5::digest(&xz))
    };
    let srv = ImageServer::start(images.clone()).await;
    env.create(
        "",
        "Secret",
        json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "creds", "namespace": "default"},
        "stringData": {"accessKeyId": "user", "secretKey": "pass"}}),
    )
    .await;

    env.create_dv(
        "slow",
        json!({"http": {"url": srv.url("slow", "disk.raw")}}),
        "16Mi",
    )
    .await;
    env.create_dv(
        "gz",
        json!({"http": {"url": srv.url("images", "disk.raw.gz"),
            "checksum": format!("sha256:{}", sha256(&gz))}}),
        "16Mi",
    )
    .await;
    env.create_dv(
        "xz",
        json!({"http": {"url": srv.url("auth", "disk.raw.xz"), "secretRef": "creds",
            "checksum": format!("md5:{md5}")}}),
        "16Mi",
    )
    .await;
    env.create_dv("blank", json!({"blank": {}}), "1Gi").await;

    // Progress advances while the throttled import runs, as "NN.NN%" strings.
    let mut seen: Vec<f64> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let v = env.dvs().get("slow").await.expect("dv");
        let phase = s(&v, "/status/phase").to_string();
        let p = s(&v, "/status/progress").to_string();
        if phase == "ImportInProgress" {
            if let Some(n) = p.strip_suffix('%').and_then(|n| n.parse::<f64>().ok()) {
                assert!(p.split_once('.').is_some_and(|(_, d)| d.len() == 3), "{p}");
                if seen.last() != Some(&n) {
                    seen.push(n);
                }
            }
            assert_eq!(condition(&v, "Running")["status"], "True");
            assert_eq!(condition(&v, "Bound")["status"], "True");
        }
        if phase == "Succeeded" {
            assert_eq!(p, "100.0%");
            assert_eq!(condition(&v, "Ready")["status"], "True");
            assert_eq!(v["status"]["restartCount"], 0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "slow import never finished: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen.len() >= 2, "progress seen: {seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "progress went back: {seen:?}"
    );

    for name in ["slow", "gz", "xz"] {
        env.dv_phase(name, "Succeeded").await;
        let disk = env.volume_dir(name).await.join("disk.img");
        assert_eq!(
            std::fs::metadata(&disk).expect("disk").len(),
            16 << 20,
            "{name}"
        );
        assert_eq!(sha256_prefix(&disk, raw.len()), sha256(&raw), "{name}");
    }
    let blank = env.dv_phase("blank", "Succeeded").await;
    assert_eq!(s(&blank, "/status/claimName"), "blank");
    let disk = env.volume_dir("blank").await.join("disk.img");
    assert_eq!(std::fs::metadata(&disk).expect("disk").len(), 1 << 30);
    assert_eq!(
        monovirt::storage::sparse::allocated(&disk).expect("blocks"),
        0
    );

    // A clone of an imported volume into a bigger one.
    env.create_dv(
        "copy",
        json!({"pvc": {"namespace": "default", "name": "gz"}}),
        "32Mi",
    )
    .await;
    env.dv_phase("copy", "Succeeded").await;
    let disk = env.volume_dir("copy").await.join("disk.img");
    assert_eq!(std::fs::metadata(&disk).expect("disk").len(), 32 << 20);
    assert_eq!(sha256_prefix(&disk, raw.len()), sha256(&raw));

    // The claim belongs to the DataVolume: deleting the DataVolume removes both.
    let dir = env.volume_dir("gz").await;
    env.dvs()
        .delete("gz", &DeleteOptions::default())
        .await
        .expect("delete dv");
    env.gone(&env.pvcs(), "gz").await;
    reclaimed(&dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_imports_say_why_and_leave_no_disk() {
    let env = Env::start();
    let work = tempfile::tempdir().expect("tempdir");
    let images = work.path().to_path_buf();
    let raw = pattern(8 * MIB, 3);
    std::fs::write(images.join("disk.raw"), &raw).expect("write");
    std::fs::write(
        images.join("readme.txt"),
        "This is not a disk image.\n".repeat(100),
    )
    .expect("write");
    qcow2_from(&images.join("disk.raw"), &images.join("disk.qcow2"));
    let q = std::fs::read(images.join("disk.qcow2")).expect("qcow2");
    std::fs::write(images.join("cut.qcow2"), &q[..q.len() / 2]).expect("write");
    let srv = ImageServer::start(images.clone()).await;
    // A port nobody listens on: bind, note, close.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");

    // (name, source, claim size, what the failure message says)
    let http = |url: String| json!({"http": {"url": url}});
    let img = |file: &str| http(srv.url("images", file));
    let bad_sum = format!("sha256:{}", "ab".repeat(32));
    let bad_sum = json!({"http": {"url": srv.url("images", "disk.raw"), "checksum": bad_sum}});
    let unauthorized = http(srv.url("auth", "disk.raw"));
    let refused = http(format!("http://{closed}/disk.raw"));
    let truncated = http(srv.url("truncated", "disk.raw"));
    let too_large = "larger than the volume";
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        ("missing", img("nope.qcow2"), "16Mi", "404"),
        ("checksum", bad_sum, "16Mi", "Checksum mismatch"),
        ("text", img("readme.txt"), "16Mi", "not a disk image"),
        ("toolarge", img("disk.qcow2"), "4Mi", too_large),
        ("toolargeraw", img("disk.raw"), "4Mi", too_large),
        ("damaged", img("cut.qcow2"), "16Mi", "damaged"),
        ("unauthorized", unauthorized, "16Mi", "401"),
        ("refused", refused, "16Mi", "Unable to connect"),
        ("truncated", truncated, "16Mi", "Reading the source failed"),
    ];
    for (name, source, size, _) in &cases {
        env.create_dv(name, source.clone(), size).await;
    }
    for (name, _, _, words) in &cases {
        let v = env.dv_phase(name, "Failed").await;
        let ready = condition(&v, "Ready");
        assert_eq!(ready["status"], "False", "{name}");
        let msg = ready["message"].as_str().unwrap_or("");
        assert!(msg.contains(words), "{name}: {msg:?} lacks {words:?}");
        let dir = env.volume_dir(name).await;
        let left = entries(&dir);
        assert!(left.is_empty(), "{name} left {left:?} behind");
        let restarts = v["status"]["restartCount"].as_i64().unwrap_or(-1);
        if ["refused", "truncated"].contains(name) {
            // Network failures are retried (each retry counts) before failing.
            assert_eq!(
                restarts,
                i64::from(monovirt::storage::populator::MAX_RESTARTS),
                "{name}"
            );
        } else {
            assert_eq!(restarts, 0, "{name} is not worth retrying");
        }
    }
}

/// A tmpfs mounted for the test, unmounted on drop.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_onto_a_full_filesystem_fails_cleanly() {
    let env = Env::start();
    let work = tempfile::tempdir().expect("tempdir");
    let small = work.path().join("small");
    std::fs::create_dir(&small).expect("mkdir");
    // Root is needed to mount; the test fails (not skips) without it.
    run(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            "size=6m",
            "tmpfs",
            &small.display().to_string(),
        ],
    );
    let _mount = Mount(small.clone());
    let images = work.path().join("images");
    std::fs::create_dir(&images).expect("mkdir");
    std::fs::write(images.join("disk.raw"), pattern(16 * MIB, 4)).expect("write");
    qcow2_from(&images.join("disk.raw"), &images.join("disk.qcow2"));
    let srv = ImageServer::start(images).await;
    env.class("tiny", &small).await;
    for (name, file) in [("full-raw", "disk.raw"), ("full-qcow2", "disk.qcow2")] {
        env.create("", "PersistentVolumeClaim", json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": "default",
                "annotations": {"cdi.kubevirt.io/storage.import.endpoint": srv.url("images", file)}},
            "spec": {"storageClassName": "tiny", "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "64Mi"}}}})).await;
    }
    for name in ["full-raw", "full-qcow2"] {
        let v = env
            .wait(&env.pvcs(), name, "import failure", |v| {
                s(v, IMPORT_PHASE) == "Failed"
            })
            .await;
        let msg = s(
            &v,
            "/metadata/annotations/cdi.kubevirt.io~1storage.condition.running.message",
        );
        assert!(msg.contains("No space left"), "{name}: {msg}");
        assert_eq!(
            s(
                &v,
                "/metadata/annotations/cdi.kubevirt.io~1storage.condition.running.reason"
            ),
            "InsufficientStorage"
        );
        let dir = env.volume_dir(name).await;
        let left = entries(&dir);
        assert!(left.is_empty(), "{name} left {left:?}");
    }
    // Everything the imports wrote is gone: the filesystem is empty again but for the
    // (empty) volume directories.
    let out = std::process::Command::new("du")
        .args(["-sk"])
        .arg(&small)
        .output()
        .expect("du");
    let kib: u64 = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("du output");
    assert!(kib < 64, "{kib} KiB still used");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_in_use_is_kept_until_its_vmi_is_gone() {
    let env = Env::start();
    env.create(
        "",
        "PersistentVolumeClaim",
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": "default"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "8Mi"}}}}),
    )
    .await;
    let bound = env
        .wait(&env.pvcs(), "data", "binding", |v| {
            s(v, "/status/phase") == "Bound"
        })
        .await;
    assert!(bound["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| f.contains(&json!("kubernetes.io/pvc-protection"))));
    let dir = env.volume_dir("data").await;
    let disk = dir.join("disk.img");
    assert_eq!(std::fs::metadata(&disk).expect("disk").len(), 8 << 20);
    // The default class's directory is under the data dir.
    assert!(
        dir.starts_with(env.server.dir.path().join("storage")),
        "{dir:?}"
    );
    env.create(
        "kubevirt.io",
        "VirtualMachineInstance",
        json!({"apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance", "metadata": {"name": "user", "namespace": "default"},
        "spec": {"domain": {"devices": {"disks": [{"name": "d", "disk": {"bus": "virtio"}}]},
            "resources": {"requests": {"memory": "64Mi"}}},
            // Never scheduled: it holds the claim without running anywhere.
            "nodeSelector": {"monovirt.test/nowhere": "true"},
            "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}}),
    )
    .await;
    let r = env
        .pvcs()
        .delete("data", &DeleteOptions::default())
        .await
        .expect("delete");
    assert!(
        matches!(r, monovirt::client::Deletion::Pending(_)),
        "the finalizer keeps it"
    );
    // Let the provisioner see the deletion; the claim stays, Terminating, with its data.
    env.wait(&env.pvcs(), "data", "deletion mark", |v| {
        !s(v, "/metadata/deletionTimestamp").is_empty()
    })
    .await;
    // A later change to the claim proves the controller has looked at it since.
    env.pvcs()
        .patch(
            "data",
            monovirt::store::Patch::Merge(json!({"metadata": {"labels": {"seen": "yes"}}})),
            &WriteOptions::default(),
        )
        .await
        .expect("label");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let still = env.pvcs().get("data").await.expect("still there");
    assert!(still["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| f.contains(&json!("kubernetes.io/pvc-protection"))));
    assert!(disk.exists());
    env.api("kubevirt.io", "VirtualMachineInstance")
        .delete("user", &DeleteOptions::default())
        .await
        .expect("delete vmi");
    env.gone(&env.pvcs(), "data").await;
    reclaimed(&dir).await;
}
