//! Patch application: JSON merge patch (RFC 7386), JSON patch (RFC 6902, through the
//! `json-patch` crate), and the strategic-merge approximation served for built-in kinds.
//! Server-side apply is applied as a merge patch (create-or-merge); see
//! [`Objects::patch`](super::Objects::patch).

use serde_json::{Map, Value};

/// Why a patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The patch document itself is malformed (400).
    #[error("{0}")]
    Malformed(String),
    /// The patch does not apply to the object (422), e.g. a failed `test` operation.
    #[error("{0}")]
    Failed(String),
}

/// RFC 7386 merge patch.
pub fn merge(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    if !patch.is_object() {
        return Err(PatchError::Malformed(
            "a merge patch must be a JSON object".to_string(),
        ));
    }
    json_patch::merge(target, patch);
    Ok(())
}

/// RFC 6902 JSON patch: the operations apply all or not at all.
pub fn json(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| PatchError::Malformed(format!("invalid JSON patch: {e}")))?;
    json_patch::patch(target, &ops).map_err(|e| PatchError::Failed(e.to_string()))
}

/// Strategic merge patch, approximated: a merge patch whose lists of objects that all
/// carry `name` (or, for `conditions` and `addresses`, `type`) merge element-wise by that
/// key; `$patch: delete` elements remove the named item; kubectl's `$setElementOrder/`,
/// `$retainKeys` and `$deleteFromPrimitiveList/` directives are honoured or dropped.
pub fn strategic(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    if !patch.is_object() {
        return Err(PatchError::Malformed(
            "a strategic merge patch must be a JSON object".to_string(),
        ));
    }
    strategic_value(target, patch, "");
    Ok(())
}

fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    let all_have = |k: &str| !items.is_empty() && items.iter().all(|i| i.get(k).is_some());
    if matches!(field, "conditions" | "addresses") && all_have("type") {
        Some("type")
    } else if all_have("name") {
        Some("name")
    } else {
        None
    }
}

fn strategic_value(target: &mut Value, patch: &Value, field: &str) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => strategic_object(t, p),
        (t @ Value::Array(_), Value::Array(p)) => {
            let Value::Array(items) = t else {
                unreachable!("matched as an array")
            };
            match merge_key(field, p) {
                Some(key) if items.iter().all(|i| i.get(key).is_some()) => {
                    strategic_list(items, p, key)
                }
                _ => *t = Value::Array(p.iter().map(strip_directives).collect()),
            }
        }
        (t, p) => *t = strip_directives(p),
    }
}

fn strategic_object(t: &mut Map<String, Value>, p: &Map<String, Value>) {
    for (k, v) in p {
        if k.starts_with("$setElementOrder/") || k == "$retainKeys" || k == "$patch" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(remove)) = (t.get_mut(field), v) {
                list.retain(|x| !remove.contains(x));
            }
            continue;
        }
        if v.is_null() {
            t.remove(k);
        } else if let Some(existing) = t.get_mut(k) {
            strategic_value(existing, v, k);
        } else {
            t.insert(k.clone(), strip_directives(v));
        }
    }
}

fn strategic_list(items: &mut Vec<Value>, patch: &[Value], key: &str) {
    for p in patch {
        let id = p.get(key).cloned();
        let delete = p.get("$patch").and_then(Value::as_str) == Some("delete");
        let pos = items.iter().position(|i| i.get(key) == id.as_ref());
        match (pos, delete) {
            (Some(i), true) => {
                items.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_value(&mut items[i], p, ""),
            (None, false) => items.push(strip_directives(p)),
        }
    }
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_rfc7386() {
        let mut o = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        merge(&mut o, &json!({"a": "z", "c": {"f": null}, "l": [3]})).expect("applies");
        assert_eq!(o, json!({"a": "z", "c": {"d": "e"}, "l": [3]}));
        assert!(matches!(
            merge(&mut o, &json!([1])),
            Err(PatchError::Malformed(_))
        ));
    }

    #[test]
    fn json_patch_rfc6902_is_atomic() {
        let mut o = json!({"spec": {"running": false, "list": ["a"]}});
        json(
            &mut o,
            &json!([
                {"op": "replace", "path": "/spec/running", "value": true},
                {"op": "add", "path": "/spec/list/-", "value": "b"},
                {"op": "test", "path": "/spec/list/0", "value": "a"}
            ]),
        )
        .expect("applies");
        assert_eq!(o, json!({"spec": {"running": true, "list": ["a", "b"]}}));
        let before = o.clone();
        let err = json(
            &mut o,
            &json!([
                {"op": "remove", "path": "/spec/running"},
                {"op": "test", "path": "/spec/list/0", "value": "zzz"}
            ]),
        );
        assert!(matches!(err, Err(PatchError::Failed(_))));
        assert_eq!(o, before, "a failed patch changes nothing");
        assert!(matches!(
            json(&mut o, &json!({"op": "add"})),
            Err(PatchError::Malformed(_))
        ));
    }

    #[test]
    fn strategic_merges_named_lists() {
        let mut node = json!({"status": {"conditions": [
            {"type": "Ready", "status": "False"}, {"type": "DiskPressure", "status": "False"}]},
            "spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]},
            "metadata": {"finalizers": ["x", "y"]}});
        strategic(
            &mut node,
            &json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]},
                    "$setElementOrder/conditions": [{"type": "Ready"}],
                    "spec": {"taints": [{"key": "b", "effect": "NoExecute"}]},
                    "metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}}),
        )
        .expect("applies");
        assert_eq!(node["status"]["conditions"][0]["status"], "True");
        assert_eq!(node["status"]["conditions"][1]["type"], "DiskPressure");
        assert_eq!(
            node["spec"]["taints"],
            json!([{"key": "b", "effect": "NoExecute"}])
        );
        assert_eq!(node["metadata"]["finalizers"], json!(["y"]));
        let mut o = json!({"items": [{"name": "a", "v": 1}, {"name": "b", "v": 2}]});
        strategic(
            &mut o,
            &json!({"items": [{"name": "a", "$patch": "delete"}, {"name": "c", "v": 3}]}),
        )
        .expect("applies");
        assert_eq!(
            o,
            json!({"items": [{"name": "b", "v": 2}, {"name": "c", "v": 3}]})
        );
    }
}
