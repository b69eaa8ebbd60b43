//! Keeps README.md's "Walkthrough with curl" verbatim-correct: every ```sh block of that
//! section is run, as written, against a real `monovirt serve`, with only the address
//! (`127.0.0.1:8080`) and the data dir (`/tmp/monovirt`) replaced by the test server's.

mod common;

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
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let blocks = walkthrough_blocks(&readme);
    assert!(
        blocks.len() >= 6,
        "create, list, get, patch, watch, delete: found {}",
        blocks.len()
    );
    let server = BinaryServer::start();
    let data_dir = server.dir.path().display().to_string();
    let mut outputs = Vec::new();
    for block in &blocks {
        assert!(
            block.trim_start().starts_with("curl "),
            "walkthrough blocks are curl commands: {block}"
        );
        let script = block
            .replace("127.0.0.1:8080", &server.addr.to_string())
            .replace("/tmp/monovirt", &data_dir);
        let out = Command::new("sh")
            .args(["-euc", &script])
            .output()
            .expect("sh");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{block}\nfailed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let docs = json_docs(&stdout);
        assert!(!docs.is_empty(), "{block}\nprinted nothing");
        for d in &docs {
            assert!(
                !(d["kind"] == "Status" && d["status"] == "Failure"),
                "{block}\nanswered {d}"
            );
        }
        outputs.push(docs);
    }
    // What each step shows.
    assert_eq!(outputs[0][0]["metadata"]["name"], "testvm");
    assert_eq!(outputs[1][0]["kind"], "VirtualMachineList");
    assert_eq!(outputs[1][0]["items"][0]["metadata"]["name"], "testvm");
    assert_eq!(
        outputs[2][0]["metadata"]["uid"],
        outputs[0][0]["metadata"]["uid"]
    );
    assert_eq!(outputs[3][0]["metadata"]["labels"]["tier"], "gold");
    assert_eq!(outputs[4][0]["type"], "ADDED");
    assert_eq!(
        outputs[4][0]["object"]["metadata"]["labels"]["tier"],
        "gold"
    );
    assert_eq!(outputs[5][0]["metadata"]["name"], "testvm");
}
