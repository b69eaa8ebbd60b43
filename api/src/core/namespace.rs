//! Namespace (`v1`): defaulting (the `kubernetes` finalizer, phase `Active`, the
//! `kubernetes.io/metadata.name` label) and validation.

use crate::status::Cause;
pub use k8s_openapi::api::core::v1::Namespace;
use serde_json::{json, Value};

/// The label kube-apiserver puts on every namespace, holding its name.
pub const NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Defaults a Namespace as kube-apiserver does on create.
///
/// ```
/// let mut ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "dev"}});
/// api::core::namespace::default(&mut ns);
/// assert_eq!(ns["metadata"]["labels"]["kubernetes.io/metadata.name"], "dev");
/// assert_eq!(ns["spec"]["finalizers"][0], "kubernetes");
/// assert_eq!(ns["status"]["phase"], "Active");
/// ```
pub fn default(obj: &mut Value) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    let name = map
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    if let (Some(name), Some(meta)) = (name, map.get_mut("metadata").and_then(Value::as_object_mut))
    {
        let labels = meta.entry("labels").or_insert_with(|| json!({}));
        if labels.is_null() {
            *labels = json!({});
        }
        if let Some(l) = labels.as_object_mut() {
            l.insert(NAME_LABEL.into(), Value::from(name));
        }
    }
    let spec = map.entry("spec").or_insert_with(|| json!({}));
    if let Some(s) = spec.as_object_mut() {
        if s.get("finalizers").is_none_or(Value::is_null) {
            s.insert("finalizers".into(), json!(["kubernetes"]));
        }
    }
    let status = map.entry("status").or_insert_with(|| json!({}));
    if let Some(s) = status.as_object_mut() {
        if s.get("phase")
            .is_none_or(|p| p.as_str().unwrap_or("").is_empty())
        {
            s.insert("phase".into(), json!("Active"));
        }
    }
}

/// Validates a Namespace beyond its schema: phase values and finalizer names.
pub fn validate(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    causes.extend(crate::validation::unless_one_of(
        "status.phase",
        obj.pointer("/status/phase").and_then(Value::as_str),
        &["Active", "Terminating"],
    ));
    if let Some(list) = obj.pointer("/spec/finalizers").and_then(Value::as_array) {
        for (i, f) in list.iter().enumerate() {
            let name = f.as_str().unwrap_or("");
            if name != "kubernetes" {
                for e in crate::validation::qualified_name(name) {
                    causes.push(crate::validation::invalid(
                        format!("spec.finalizers[{i}]"),
                        f,
                        &e,
                    ));
                }
            }
        }
    }
    causes
}
