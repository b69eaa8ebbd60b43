//! Manifests for `apply -f` and `delete -f`: YAML (several `---` documents) or JSON, from
//! files, directories (their `.yaml`, `.yml` and `.json` files, sorted) or stdin (`-`);
//! a `kind: List` stands for its items.

use super::CliError;
use serde::Deserialize;
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};

/// One object of a manifest and where it came from (for messages).
#[derive(Debug, Clone)]
pub struct Document {
    pub source: String,
    pub object: Value,
}

/// The objects of `text`: every non-empty YAML document (JSON is YAML), lists expanded.
pub fn parse(source: &str, text: &str) -> Result<Vec<Document>, CliError> {
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let v = Value::deserialize(doc).map_err(|e| CliError::Manifest {
            source_name: source.to_string(),
            message: format!("not valid YAML or JSON: {e}"),
        })?;
        push(source, v, &mut out)?;
    }
    Ok(out)
}

fn push(source: &str, v: Value, out: &mut Vec<Document>) -> Result<(), CliError> {
    match v {
        Value::Null => Ok(()),
        Value::Object(ref m) if m.get("kind").and_then(Value::as_str) == Some("List") => {
            for item in m
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
            {
                push(source, item, out)?;
            }
            Ok(())
        }
        Value::Object(_) => {
            out.push(Document {
                source: source.to_string(),
                object: v,
            });
            Ok(())
        }
        other => Err(CliError::Manifest {
            source_name: source.to_string(),
            message: format!("a manifest document must be an object, not {other}"),
        }),
    }
}

fn read_file(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|source| CliError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The manifest files under a directory, sorted by name.
fn directory(dir: &Path) -> Result<Vec<PathBuf>, CliError> {
    let entries = std::fs::read_dir(dir).map_err(|source| CliError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    for e in entries {
        let p = e
            .map_err(|source| CliError::Read {
                path: dir.to_path_buf(),
                source,
            })?
            .path();
        let manifest = p
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| ["yaml", "yml", "json"].contains(&x));
        if manifest && p.is_file() {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// Every object of the `-f` arguments, in order.
pub fn read_all(files: &[String]) -> Result<Vec<Document>, CliError> {
    let mut out = Vec::new();
    for f in files {
        if f == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|source| CliError::Read {
                    path: PathBuf::from("<stdin>"),
                    source,
                })?;
            out.extend(parse("<stdin>", &text)?);
            continue;
        }
        let p = Path::new(f);
        if p.is_dir() {
            for file in directory(p)? {
                out.extend(parse(&file.display().to_string(), &read_file(&file)?)?);
            }
        } else {
            out.extend(parse(f, &read_file(p)?)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_documents_json_and_lists() {
        let text = "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\n\n---\n\
                    apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: b}}\n";
        let docs = parse("t.yaml", text).expect("parses");
        let names: Vec<&str> = docs
            .iter()
            .map(|d| d.object["metadata"]["name"].as_str().expect("name"))
            .collect();
        assert_eq!(names, ["a", "b"]);
        let docs = parse("t.json", r#"{"apiVersion": "v1", "kind": "Namespace"}"#).expect("json");
        assert_eq!(docs.len(), 1);
        let e = parse("bad.yaml", "- 1\n- 2\n").expect_err("a list is no object");
        assert!(e
            .to_string()
            .starts_with("error: bad.yaml: a manifest document must be an object"));
        assert!(parse("bad.yaml", "a: [").is_err());
    }

    #[test]
    fn directories_in_name_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("b.yaml"),
            "{kind: Namespace, apiVersion: v1, metadata: {name: b}}",
        )
        .expect("w");
        std::fs::write(
            dir.path().join("a.json"),
            r#"{"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "a"}}"#,
        )
        .expect("w");
        std::fs::write(dir.path().join("notes.txt"), "not a manifest").expect("w");
        let docs = read_all(&[dir.path().display().to_string()]).expect("reads");
        let names: Vec<&str> = docs
            .iter()
            .map(|d| d.object["metadata"]["name"].as_str().expect("name"))
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert!(read_all(&["/nonexistent/x.yaml".into()]).is_err());
    }
}
