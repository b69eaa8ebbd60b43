//! Output of `get`: a server-side `Table` printed as kubectl prints it (upper-case headers,
//! columns padded to their widest cell plus three spaces, priority > 0 columns only with
//! `-o wide`, a NAMESPACE column across namespaces), and objects as YAML, JSON or names.

use serde_json::{json, Value};

/// How a Table is printed.
#[derive(Debug, Clone, Copy, Default)]
pub struct TableStyle {
    /// `-o wide`: every column, not only priority 0.
    pub wide: bool,
    /// A first NAMESPACE column from each row's object metadata (`-A`).
    pub namespace: bool,
    /// Leave out the header line (`--no-headers`).
    pub no_headers: bool,
}

/// A cell as kubectl shows it: strings as they are, `null` as `<none>`.
fn cell_text(v: &Value) -> String {
    match v {
        Value::Null => "<none>".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell_text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// The printed lines of `table` (a `meta.k8s.io/v1` Table), without trailing newlines.
pub fn table_lines(table: &Value, style: TableStyle) -> Vec<String> {
    let empty = Vec::new();
    let defs = table["columnDefinitions"].as_array().unwrap_or(&empty);
    let shown: Vec<usize> = defs
        .iter()
        .enumerate()
        .filter(|(_, d)| style.wide || d["priority"].as_i64().unwrap_or(0) == 0)
        .map(|(i, _)| i)
        .collect();
    let mut grid: Vec<Vec<String>> = Vec::new();
    if !style.no_headers {
        let mut header: Vec<String> = Vec::new();
        if style.namespace {
            header.push("NAMESPACE".into());
        }
        header.extend(
            shown
                .iter()
                .map(|&i| defs[i]["name"].as_str().unwrap_or("").to_uppercase()),
        );
        grid.push(header);
    }
    for row in table["rows"].as_array().unwrap_or(&empty) {
        let cells = row["cells"].as_array().unwrap_or(&empty);
        let mut line: Vec<String> = Vec::new();
        if style.namespace {
            line.push(
                row["object"]["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            );
        }
        line.extend(
            shown
                .iter()
                .map(|&i| cells.get(i).map(cell_text).unwrap_or_default()),
        );
        grid.push(line);
    }
    align(&grid)
}

/// Left-aligned columns, three spaces apart, no trailing blanks (kubectl's tabwriter).
fn align(grid: &[Vec<String>]) -> Vec<String> {
    let cols = grid.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            grid.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    grid.iter()
        .map(|r| {
            let mut line = String::new();
            for (c, s) in r.iter().enumerate() {
                line.push_str(s);
                if c + 1 < r.len() {
                    let pad = widths[c] - s.chars().count() + 3;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            line.trim_end().to_string()
        })
        .collect()
}

/// Fills in `apiVersion` and `kind` (list items come without them).
pub fn with_type(mut obj: Value, api_version: &str, kind: &str) -> Value {
    if let Some(m) = obj.as_object_mut() {
        m.entry("apiVersion").or_insert_with(|| json!(api_version));
        m.entry("kind").or_insert_with(|| json!(kind));
    }
    obj
}

/// kubectl's `List` around several objects (`-o yaml|json` of a list).
pub fn list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}})
}

/// `v` as YAML (a document without the leading `---`).
pub fn yaml(v: &Value) -> String {
    serde_yaml_ng::to_string(v).expect("a JSON value always serializes as YAML")
}

/// `v` as indented JSON with a final newline.
pub fn json(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("a JSON value always serializes");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Value {
        json!({
            "kind": "Table", "apiVersion": "meta.k8s.io/v1",
            "columnDefinitions": [
                {"name": "Name", "priority": 0}, {"name": "Age", "priority": 0},
                {"name": "Phase", "priority": 0}, {"name": "Node Name", "priority": 1},
            ],
            "rows": [
                {"cells": ["vm-one", "5m", "Running", "node-a"],
                 "object": {"metadata": {"namespace": "default"}}},
                {"cells": ["b", "10s", null, "n"],
                 "object": {"metadata": {"namespace": "dev"}}},
            ],
        })
    }

    #[test]
    fn narrow_table_hides_priority_columns() {
        let lines = table_lines(&table(), TableStyle::default());
        assert_eq!(
            lines,
            [
                "NAME     AGE   PHASE",
                "vm-one   5m    Running",
                "b        10s   <none>",
            ]
        );
    }

    #[test]
    fn wide_and_namespaced_tables() {
        let style = TableStyle {
            wide: true,
            namespace: true,
            no_headers: false,
        };
        let lines = table_lines(&table(), style);
        assert_eq!(
            lines,
            [
                "NAMESPACE   NAME     AGE   PHASE     NODE NAME",
                "default     vm-one   5m    Running   node-a",
                "dev         b        10s   <none>    n",
            ]
        );
        let style = TableStyle {
            no_headers: true,
            ..TableStyle::default()
        };
        assert_eq!(table_lines(&table(), style).len(), 2);
    }

    #[test]
    fn lists_carry_types() {
        let o = with_type(
            json!({"metadata": {"name": "a"}}),
            "kubevirt.io/v1",
            "VirtualMachine",
        );
        assert_eq!(o["kind"], "VirtualMachine");
        let l = list(vec![o]);
        assert_eq!(l["kind"], "List");
        assert!(yaml(&l).contains("kind: VirtualMachine"));
        assert!(json(&l).ends_with("}\n"));
    }
}
