//! Server-side printing for `kubectl get`: the columns of a kind (from its printer columns),
//! the cells of one object (JSONPath evaluation incl. `[?(@.type=='Ready')]` filters) and
//! apimachinery's `HumanDuration` for ages. Pure functions; the apiserver wraps them in a
//! `meta.k8s.io/v1` Table.

use crate::resource::{PrinterColumn, ResourceDef};
use k8s_openapi::chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// Formats a duration like apimachinery's `duration.HumanDuration`: `45s`, `3m12s`, `25m`,
/// `5h`, `7h30m`, `2d3h`, `400d`, `3y20d`.
///
/// ```
/// use api::table::human_duration;
/// assert_eq!(human_duration(45), "45s");
/// assert_eq!(human_duration(192), "3m12s");
/// assert_eq!(human_duration(5 * 3600), "5h");
/// assert_eq!(human_duration(2 * 86400 + 3 * 3600), "2d3h");
/// assert_eq!(human_duration(400 * 86400), "400d");
/// ```
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
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
    let hours = seconds / 3600;
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

/// The age of an RFC 3339 timestamp at `now`, formatted by [`human_duration`];
/// `<unknown>` when the timestamp is missing or malformed (as kubectl prints it).
pub fn age(timestamp: Option<&str>, now: DateTime<Utc>) -> String {
    match timestamp.and_then(|t| DateTime::parse_from_rfc3339(t).ok()) {
        Some(t) => human_duration((now - t.with_timezone(&Utc)).num_seconds()),
        None => "<unknown>".to_string(),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    All,
    Filter {
        path: Vec<String>,
        equal: bool,
        literal: Value,
    },
}

/// Why a JSONPath expression could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Unsupported JSONPath expression {0:?}")]
pub struct JsonPathError(String);

fn parse_path(expr: &str) -> Result<Vec<Step>, JsonPathError> {
    let err = || JsonPathError(expr.to_string());
    let e = expr.trim();
    let e = e
        .strip_prefix('{')
        .and_then(|e| e.strip_suffix('}'))
        .unwrap_or(e);
    let e = e.strip_prefix('$').unwrap_or(e);
    let mut steps = Vec::new();
    let mut rest = e;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end == 0 {
                return Err(err());
            }
            steps.push(Step::Field(r[..end].to_string()));
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let close = matching_bracket(r).ok_or_else(err)?;
            let inner = r[..close].trim();
            rest = &r[close + 1..];
            if inner == "*" {
                steps.push(Step::All);
            } else if let Ok(i) = inner.parse::<usize>() {
                steps.push(Step::Index(i));
            } else if let Some(f) = inner.strip_prefix("?(").and_then(|f| f.strip_suffix(')')) {
                steps.push(parse_filter(f).ok_or_else(err)?);
            } else if let Some(q) = unquote(inner) {
                steps.push(Step::Field(q));
            } else {
                return Err(err());
            }
        } else {
            return Err(err());
        }
    }
    Ok(steps)
}

fn matching_bracket(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '[' | '(') => depth += 1,
            (None, ')') => depth = depth.checked_sub(1)?,
            (None, ']') if depth == 0 => return Some(i),
            (None, ']') => depth -= 1,
            _ => {}
        }
    }
    None
}

fn unquote(s: &str) -> Option<String> {
    let s = s.trim();
    for q in ['\'', '"'] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            return Some(s[1..s.len() - 1].to_string());
        }
    }
    None
}

fn parse_filter(f: &str) -> Option<Step> {
    let (lhs, rhs, equal) = if let Some((l, r)) = f.split_once("==") {
        (l, r, true)
    } else {
        let (l, r) = f.split_once("!=")?;
        (l, r, false)
    };
    let path = lhs
        .trim()
        .strip_prefix("@.")?
        .split('.')
        .map(str::to_string)
        .collect();
    let rhs = rhs.trim();
    let literal = match unquote(rhs) {
        Some(s) => Value::String(s),
        None => serde_json::from_str(rhs).ok()?,
    };
    Some(Step::Filter {
        path,
        equal,
        literal,
    })
}

/// Evaluates a JSONPath as used in printer columns: `.a.b`, `[0]`, `[*]`, `['key']` and
/// `[?(@.field=='value')]` / `!=` filters. Returns every match.
///
/// ```
/// use serde_json::json;
/// let vm = json!({"status": {"conditions": [
///     {"type": "Paused", "status": "False"}, {"type": "Ready", "status": "True"}]}});
/// let hits = api::table::jsonpath(&vm, ".status.conditions[?(@.type=='Ready')].status").unwrap();
/// assert_eq!(hits, vec![&json!("True")]);
/// ```
pub fn jsonpath<'a>(value: &'a Value, expr: &str) -> Result<Vec<&'a Value>, JsonPathError> {
    let steps = parse_path(expr)?;
    let mut current = vec![value];
    for step in &steps {
        let mut next = Vec::new();
        for v in current {
            match step {
                Step::Field(f) => next.extend(v.get(f.as_str())),
                Step::Index(i) => next.extend(v.get(*i)),
                Step::All => match v {
                    Value::Array(a) => next.extend(a.iter()),
                    Value::Object(o) => next.extend(o.values()),
                    _ => {}
                },
                Step::Filter {
                    path,
                    equal,
                    literal,
                } => {
                    if let Value::Array(a) = v {
                        for item in a {
                            let got = path.iter().try_fold(item, |acc, k| acc.get(k.as_str()));
                            if got.is_some_and(|g| g == literal) == *equal {
                                next.push(item);
                            }
                        }
                    }
                }
            }
        }
        current = next;
    }
    Ok(current)
}

/// The Table `columnDefinitions` for `def`: `Name`, then its printer columns.
pub fn column_definitions(def: &ResourceDef) -> Vec<Value> {
    let mut cols = vec![json!({
        "name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
    })];
    cols.extend(def.columns.iter().map(|c| {
        json!({
            "name": c.name, "type": c.type_, "format": c.format,
            "description": c.description, "priority": c.priority,
        })
    }));
    cols
}

/// The cell of one column for `obj`, as the CRD table convertor renders it: the first JSONPath
/// match; `date` columns as ages; `null` (printed `<none>`) when nothing matches. The columns
/// kube-apiserver computes for built-in kinds (a Node's Status and Roles, a PVC's Access
/// Modes, ...) are computed the same way here.
pub fn cell(def: &ResourceDef, column: &PrinterColumn, obj: &Value, now: DateTime<Utc>) -> Value {
    if let Some(v) = crate::core::columns::computed(def, column, obj) {
        return v;
    }
    let first = jsonpath(obj, column.json_path)
        .ok()
        .and_then(|hits| hits.into_iter().next().cloned());
    match (column.type_, first) {
        (_, None) => Value::Null,
        ("date", Some(Value::String(t))) => Value::from(age(Some(&t), now)),
        ("string", Some(Value::String(s))) => Value::String(s),
        ("string", Some(other)) => Value::from(render_plain(&other)),
        (_, Some(v)) => v,
    }
}

fn render_plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The cells of one Table row for `obj`: its name, then each printer column.
///
/// ```
/// use serde_json::json;
/// let def = api::resource::find_kind("kubevirt.io", "VirtualMachine").unwrap();
/// let now = "2026-01-01T00:05:00Z".parse().unwrap();
/// let vm = json!({"metadata": {"name": "vm1", "creationTimestamp": "2026-01-01T00:00:00Z"},
///                 "status": {"printableStatus": "Stopped",
///                            "conditions": [{"type": "Ready", "status": "False"}]}});
/// assert_eq!(api::table::cells(def, &vm, now), vec![json!("vm1"), json!("5m"), json!("Stopped"), json!("False")]);
/// ```
pub fn cells(def: &ResourceDef, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let mut row = vec![crate::core::columns::name(def, obj)];
    row.extend(def.columns.iter().map(|c| cell(def, c, obj, now)));
    row
}

/// The `PartialObjectMetadata` that kubectl expects as each row's `object`.
pub fn partial_object_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_duration_matches_apimachinery() {
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (121, "2m1s"),
            (599, "9m59s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 60, "3h1m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (48 * 3600, "2d"),
            (7 * 86400 + 23 * 3600, "7d23h"),
            (8 * 86400, "8d"),
            (729 * 86400, "729d"),
            (730 * 86400, "2y"),
            (731 * 86400, "2y1d"),
            (8 * 365 * 86400, "8y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(secs), want, "{secs}s");
        }
    }

    #[test]
    fn jsonpath_forms() {
        let v = json!({"status": {"interfaces": [{"ipAddress": "10.0.2.2"}, {"ipAddress": "10.1.0.5"}],
                        "capacity": {"storage": "1Gi"}},
                       "metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}}});
        assert_eq!(
            jsonpath(&v, ".status.interfaces[0].ipAddress").expect("valid in test"),
            vec![&json!("10.0.2.2")]
        );
        assert_eq!(
            jsonpath(&v, ".status.interfaces[*].ipAddress")
                .expect("valid in test")
                .len(),
            2
        );
        assert_eq!(
            jsonpath(&v, "{.status.capacity.storage}").expect("valid in test"),
            vec![&json!("1Gi")]
        );
        assert_eq!(
            jsonpath(
                &v,
                ".metadata.labels['node-role.kubernetes.io/control-plane']"
            )
            .expect("valid in test"),
            vec![&json!("")]
        );
        assert_eq!(
            jsonpath(
                &v,
                ".status.interfaces[?(@.ipAddress!='10.0.2.2')].ipAddress"
            )
            .expect("valid in test"),
            vec![&json!("10.1.0.5")]
        );
        assert!(jsonpath(&v, ".status.missing[0]")
            .expect("valid in test")
            .is_empty());
        assert!(jsonpath(&v, "status").is_err());
        assert!(jsonpath(&v, ".a[").is_err());
    }

    #[test]
    fn age_of_bad_timestamp_is_unknown() {
        let now: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().expect("timestamp");
        assert_eq!(age(Some("yesterday"), now), "<unknown>");
        assert_eq!(age(None, now), "<unknown>");
        assert_eq!(age(Some("2025-12-31T23:59:15Z"), now), "45s");
    }
}
