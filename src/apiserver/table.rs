//! `meta.k8s.io/v1` Table rendering for `kubectl get`: a Name column, then the kind's
//! printer columns (KubeVirt's CRD `additionalPrinterColumns`) evaluated by their simple
//! JSONPath, ages rendered the way apimachinery's `duration.HumanDuration` does, and each
//! row's `object` as `PartialObjectMetadata` (or the full object, or nothing, as
//! `includeObject` asks).

use api::resource::{PrinterColumn, ResourceDef};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime};

/// `?includeObject=`: what each row carries as its `object`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    None,
    /// `PartialObjectMetadata` (the default).
    #[default]
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "None" => Some(Self::None),
            "Metadata" | "" => Some(Self::Metadata),
            "Object" => Some(Self::Object),
            _ => None,
        }
    }
}

/// How a Table is produced: for which kind, the Table's apiVersion and the row objects.
#[derive(Debug, Clone, Copy)]
pub struct TableOptions {
    pub v1beta1: bool,
    pub include: IncludeObject,
}

const NAME_COLUMN: PrinterColumn = PrinterColumn {
    name: "Name",
    type_: "string",
    format: "name",
    description: "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated.",
    priority: 0,
    json_path: ".metadata.name",
};

const AGE_COLUMN: PrinterColumn = PrinterColumn {
    name: "Age",
    type_: "date",
    format: "",
    description: "CreationTimestamp is a timestamp representing the server time when this object was created.",
    priority: 0,
    json_path: ".metadata.creationTimestamp",
};

/// The columns of `def`'s Table: Name first, then its printer columns (Age alone when
/// the kind declares none, as kube-apiserver's default table convertor does).
pub fn columns(def: &ResourceDef) -> Vec<PrinterColumn> {
    let mut cols = vec![NAME_COLUMN];
    if def.columns.is_empty() {
        cols.push(AGE_COLUMN);
    }
    cols.extend(def.columns.iter().filter(|c| c.name != "Name").copied());
    cols
}

fn column_definitions(cols: &[PrinterColumn]) -> Vec<Value> {
    cols.iter()
        .map(|c| {
            json!({"name": c.name, "type": c.type_, "format": c.format,
                   "description": c.description, "priority": c.priority})
        })
        .collect()
}

fn cell(col: &PrinterColumn, obj: &Value, now: SystemTime) -> Value {
    let found = eval(col.json_path, obj);
    let value = match found.as_slice() {
        [] => return Value::Null,
        [one] => (*one).clone(),
        many => Value::String(
            many.iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
        ),
    };
    if col.type_ == "date" {
        if let Some(s) = value.as_str() {
            if let Ok(t) = humantime::parse_rfc3339_weak(s.trim_end_matches('Z')) {
                return Value::String(match now.duration_since(t) {
                    Ok(d) => human_duration(d),
                    // In the future by up to 2 s counts as now; beyond is invalid.
                    Err(e) if e.duration() < Duration::from_secs(2) => "0s".to_string(),
                    Err(_) => "<invalid>".to_string(),
                });
            }
        }
    }
    value
}

fn row_object(def: &ResourceDef, obj: &Value, include: IncludeObject) -> Option<Value> {
    match include {
        IncludeObject::None => None,
        IncludeObject::Object => {
            let mut o = obj.clone();
            if o.get("kind").is_none() {
                o["kind"] = json!(def.kind);
                o["apiVersion"] = json!(def.api_version());
            }
            Some(o)
        }
        IncludeObject::Metadata => Some(json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
        })),
    }
}

/// A Table of `objects`. `list_meta` becomes the Table's `metadata` (resourceVersion,
/// continue).
pub fn render(def: &ResourceDef, objects: &[Value], list_meta: Value, opts: TableOptions) -> Value {
    render_at(def, objects, list_meta, opts, SystemTime::now())
}

fn render_at(
    def: &ResourceDef,
    objects: &[Value],
    list_meta: Value,
    opts: TableOptions,
    now: SystemTime,
) -> Value {
    let cols = columns(def);
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let cells: Vec<Value> = cols.iter().map(|c| cell(c, o, now)).collect();
            let mut row = json!({"cells": cells});
            if let Some(obj) = row_object(def, o, opts.include) {
                row["object"] = obj;
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": if opts.v1beta1 { "meta.k8s.io/v1beta1" } else { "meta.k8s.io/v1" },
        "metadata": list_meta,
        "columnDefinitions": column_definitions(&cols),
        "rows": rows,
    })
}

/// apimachinery's `duration.HumanDuration`: `45s`, `3m12s`, `15m`, `5h`, `2d3h`, `30d`, `2y`.
pub fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// One step of a printer-column JSONPath.
#[derive(Debug, PartialEq)]
enum Step<'a> {
    Field(&'a str),
    Index(usize),
    All,
    /// `[?(@.key.path=='value')]`
    Filter(Vec<&'a str>, String),
}

fn parse_path(path: &str) -> Option<Vec<Step<'_>>> {
    let p = path.trim();
    let p = p
        .strip_prefix('{')
        .and_then(|p| p.strip_suffix('}'))
        .unwrap_or(p);
    let mut steps = Vec::new();
    let mut rest = p.strip_prefix('$').unwrap_or(p);
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end == 0 {
                return None;
            }
            steps.push(Step::Field(&r[..end]));
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let close = if r.starts_with("?(") {
                r.find(")]")? + 1
            } else {
                r.find(']')?
            };
            let inner = &r[..close];
            rest = &r[close + 1..];
            if inner == "*" {
                steps.push(Step::All);
            } else if let Ok(i) = inner.parse::<usize>() {
                steps.push(Step::Index(i));
            } else if let Some(f) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let (key, value) = f.split_once("==")?;
                let value = value
                    .trim()
                    .trim_matches(|c| c == '\'' || c == '"')
                    .to_string();
                steps.push(Step::Filter(key.trim().split('.').collect(), value));
            } else {
                return None;
            }
        } else {
            return None;
        }
    }
    Some(steps)
}

fn lookup<'v>(v: &'v Value, keys: &[&str]) -> Option<&'v Value> {
    keys.iter().try_fold(v, |v, k| v.get(*k))
}

/// Evaluates the JSONPath subset KubeVirt's printer columns use: `.a.b`, `[n]`, `[*]` and
/// `[?(@.key=='value')]`. Unparseable paths and missing values give no result.
pub fn eval<'v>(path: &str, obj: &'v Value) -> Vec<&'v Value> {
    let Some(steps) = parse_path(path) else {
        return Vec::new();
    };
    let mut cur = vec![obj];
    for step in &steps {
        cur = cur
            .into_iter()
            .flat_map(|v| -> Vec<&'v Value> {
                match step {
                    Step::Field(f) => v.get(*f).into_iter().collect(),
                    Step::Index(i) => v.get(*i).into_iter().collect(),
                    Step::All => v.as_array().map(|a| a.iter().collect()).unwrap_or_default(),
                    Step::Filter(keys, want) => v
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter(|item| {
                                    lookup(item, keys).is_some_and(|x| match x {
                                        Value::String(s) => s == want,
                                        other => want.as_str() == other.to_string().as_str(),
                                    })
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                }
            })
            .collect();
    }
    cur.retain(|v| !v.is_null());
    cur
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::testing::{NODE, VM};

    #[test]
    fn human_durations_match_apimachinery() {
        let cases = [
            (0, "0s"),
            (45, "45s"),
            (119, "119s"),
            (120, "2m"),
            (192, "3m12s"),
            (600, "10m"),
            (3 * 3600 - 1, "179m"),
            (3 * 3600, "3h"),
            (5 * 3600 + 60, "5h1m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (51 * 3600, "2d3h"),
            (8 * 86400, "8d"),
            (2 * 365 * 86400, "2y"),
            (2 * 365 * 86400 + 86400, "2y1d"),
            (9 * 365 * 86400, "9y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(Duration::from_secs(secs)), want, "{secs}s");
        }
    }

    #[test]
    fn jsonpath_subset() {
        let o = json!({"status": {"conditions": [{"type": "Paused", "status": "False"},
                                                  {"type": "Ready", "status": "True"}],
                                  "ips": ["10.0.0.1", "fd00::1"]}});
        assert_eq!(
            eval(".status.conditions[?(@.type=='Ready')].status", &o),
            vec![&json!("True")]
        );
        assert_eq!(eval("{.status.ips[1]}", &o), vec![&json!("fd00::1")]);
        assert_eq!(eval(".status.conditions[*].type", &o).len(), 2);
        assert!(eval(".status.missing", &o).is_empty());
        assert!(eval(".status[", &o).is_empty());
    }

    #[test]
    fn vm_table_rows() {
        let now = humantime::parse_rfc3339("2026-01-01T00:05:00Z").expect("time");
        let vm = json!({"metadata": {"name": "vm1", "namespace": "default", "resourceVersion": "7",
                                     "creationTimestamp": "2026-01-01T00:00:00Z"},
                        "spec": {}, "status": {"printableStatus": "Stopped",
                                               "conditions": [{"type": "Ready", "status": "False"}]}});
        let t = render_at(
            &VM,
            &[vm],
            json!({"resourceVersion": "9"}),
            TableOptions {
                v1beta1: false,
                include: IncludeObject::Metadata,
            },
            now,
        );
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["metadata"]["resourceVersion"], "9");
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .expect("cols")
            .iter()
            .map(|c| c["name"].as_str().expect("name"))
            .collect();
        assert_eq!(names, ["Name", "Age", "Status", "Ready"]);
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["vm1", "5m", "Stopped", "False"])
        );
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["rows"][0]["object"]["metadata"]["namespace"], "default");
    }

    #[test]
    fn kinds_without_columns_get_name_and_age() {
        let now = humantime::parse_rfc3339("2026-01-01T02:00:00Z").expect("time");
        let node = json!({"metadata": {"name": "n1", "creationTimestamp": "2026-01-01T00:00:00Z"}});
        let t = render_at(
            &NODE,
            std::slice::from_ref(&node),
            json!({}),
            TableOptions {
                v1beta1: true,
                include: IncludeObject::Object,
            },
            now,
        );
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1beta1");
        assert_eq!(t["rows"][0]["cells"], json!(["n1", "120m"]));
        assert_eq!(t["rows"][0]["object"]["kind"], "Node");
    }
}
