//! Node (`v1`): validation of taints and of the unschedulable flag (the node agent writes
//! nodes; `kubectl cordon` patches them).

use crate::status::Cause;
use crate::validation::{duplicate, invalid, label_value, not_supported, qualified_name};
pub use k8s_openapi::api::core::v1::Node;
use serde_json::Value;
use std::collections::BTreeSet;

const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// Nodes get no defaults.
pub fn default(_obj: &mut Value) {}

/// Validates a Node beyond its schema: taint keys, values and effects, no duplicate taints.
///
/// ```
/// use serde_json::json;
/// let causes = api::core::node::validate(&json!({"spec": {"taints": [{"key": "a", "effect": "Sometimes"}]}}));
/// assert_eq!(causes[0].field, "spec.taints[0].effect");
/// ```
pub fn validate(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let Some(taints) = obj.pointer("/spec/taints").and_then(Value::as_array) else {
        return causes;
    };
    let mut seen = BTreeSet::new();
    for (i, t) in taints.iter().enumerate() {
        let p = format!("spec.taints[{i}]");
        let key = t.get("key").and_then(Value::as_str).unwrap_or("");
        if key.is_empty() {
            causes.push(Cause::required(format!("{p}.key")));
        }
        for e in qualified_name(key).into_iter().filter(|_| !key.is_empty()) {
            causes.push(invalid(format!("{p}.key"), &Value::from(key), &e));
        }
        if let Some(v) = t.get("value").and_then(Value::as_str) {
            for e in label_value(v) {
                causes.push(invalid(format!("{p}.value"), &Value::from(v), &e));
            }
        }
        let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
        if effect.is_empty() {
            causes.push(Cause::required(format!("{p}.effect")));
        } else if !TAINT_EFFECTS.contains(&effect) {
            causes.push(not_supported(
                format!("{p}.effect"),
                &Value::from(effect),
                TAINT_EFFECTS,
            ));
        }
        if !seen.insert((key.to_string(), effect.to_string())) {
            causes.push(duplicate(p.clone(), &format!("{key}:{effect}")));
        }
    }
    causes
}
