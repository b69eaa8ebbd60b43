//! Keeps README.md's "Walkthrough with curl" verbatim-correct: every ```sh block of that
//! section is run, as written, against a real `monovirt serve` (whose node agent boots the
//! test guest on /dev/kvm), with only the address (`127.0.0.1:8080`), the data dir
//! (`/tmp/monovirt`) and the `monovirt` binary replaced by the test's.

mod common;
mod vmm_support;

use common::api::BinaryServer;
use serde_json::Value;
use std::process::Command;

/// The ```sh blocks of the `## Walkthrough with curl` section.
fn walkthrough_blocks(readme: &str) -> Vec<String> {
    let start = readme
        .find("\n## Walkthrough with curl")
        .expect("README has the walkthrough section");
    let section = &readme[start + 1..];
    let section = match section[1..].find("\n## ") {
        Some(end) => &section[..end + 1],
        None => section,
    };
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in section.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(b), "```") => {
                blocks.push(std::mem::take(b));
                current = None;
            }
            (Some(b), l) => {
                b.push_str(l);
                b.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// Every JSON document in curl's output (one object, or one per line for a watch).
fn json_docs(out: &str) -> Vec<Value> {
    let whole: Result<Value, _> = serde_json::from_str(out);
    match whole {
        Ok(v) => vec![v],
        Err(_) => out
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect(),
    }
}

#[test]
fn readme_curl_walkthrough_works_verbatim() {
    if !vmm_support::kvm_available() {
        return;
    }
    // The walkthrough imports the test guest from where its build puts it.
    common::guest::guest_elf().expect("the test guest builds");
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let blocks = walkthrough_blocks(&readme);
    assert_eq!(
        blocks.len(),
        11,
        "import, create, list, get, patch, watch, console, stop, watch, start, delete"
    );
    let server = BinaryServer::start();
    let data_dir = server.dir.path().display().to_string();
    let mut outputs: Vec<(String, Vec<Value>)> = Vec::new();
    for block in &blocks {
        let block = block.trim_start();
        let is_curl = block.starts_with("curl ");
        // `monovirt` commands, or their input piped in (`sleep 3 | monovirt console ...`).
        let is_monovirt = block.starts_with("monovirt ")
            || block
                .split_once(" | ")
                .is_some_and(|(_, cmd)| cmd.starts_with("monovirt "));
        assert!(
            is_curl || is_monovirt,
            "walkthrough blocks are curl or monovirt commands: {block}"
        );
        let mut script = block
            .replace("127.0.0.1:8080", &server.addr.to_string())
            .replace("/tmp/monovirt", &data_dir);
        if !is_curl {
            script = script.replacen("monovirt", env!("CARGO_BIN_EXE_monovirt"), 1);
        }
        let out = Command::new("sh")
            .args(["-euc", &script])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("sh");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{block}\nfailed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let docs = if is_curl {
            json_docs(&stdout)
        } else {
            Vec::new()
        };
        for d in &docs {
            assert!(
                !(d["kind"] == "Status" && d["status"] == "Failure"),
                "{block}\nanswered {d}"
            );
        }
        outputs.push((stdout, docs));
    }
    // What each step shows.
    assert!(
        outputs[0]
            .0
            .contains("imported docker.io/monovirt/test-guest:latest"),
        "{}",
        outputs[0].0
    );
    let doc = |i: usize| &outputs[i].1[0];
    assert_eq!(doc(1)["metadata"]["name"], "testvm");
    assert_eq!(doc(2)["kind"], "VirtualMachineList");
    assert_eq!(doc(2)["items"][0]["metadata"]["name"], "testvm");
    assert_eq!(doc(3)["metadata"]["uid"], doc(1)["metadata"]["uid"]);
    assert_eq!(doc(4)["metadata"]["labels"]["tier"], "gold");
    // The VMI's watch reaches Running on this node.
    let vmi_events = &outputs[5].1;
    assert_eq!(vmi_events[0]["type"], "ADDED");
    assert!(
        vmi_events
            .iter()
            .any(|e| e["object"]["status"]["phase"] == "Running"),
        "{vmi_events:?}"
    );
    // The console shows the guest's report, then its ticks.
    let console = &outputs[6].0;
    assert!(console.contains("guest=monovirt-test-guest"), "{console}");
    assert!(console.contains("\ntick="), "{console}");
    assert_eq!(doc(7), &Value::from(202));
    assert!(
        outputs[8].1.iter().any(|e| e["type"] == "DELETED"),
        "{:?}",
        outputs[8].1
    );
    assert_eq!(doc(9), &Value::from(202));
    assert_eq!(doc(10)["metadata"]["name"], "testvm");
}
