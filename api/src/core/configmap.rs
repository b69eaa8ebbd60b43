//! ConfigMap (`v1`): validation of its keys (no defaults), as kube-apiserver does it. An
//! import's CA bundle (`certConfigMap`) is read from a ConfigMap.

use crate::status::Cause;
pub use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::Value;

/// Validates a ConfigMap beyond its schema: keys of `data` and `binaryData`, no key in both.
///
/// ```
/// let causes = api::core::configmap::validate(&serde_json::json!({
///     "data": {"ca.pem": "x"}, "binaryData": {"ca.pem": "eA=="}}));
/// assert_eq!(causes[0].field, "data[ca.pem]");
/// ```
pub fn validate(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    for field in ["data", "binaryData"] {
        for k in obj
            .get(field)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            if !super::secret::valid_key(k) {
                causes.push(crate::validation::invalid(
                    format!("{field}[{k}]"),
                    &Value::from(k.as_str()),
                    "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
                ));
            }
        }
    }
    if let (Some(d), Some(b)) = (
        obj.get("data").and_then(Value::as_object),
        obj.get("binaryData").and_then(Value::as_object),
    ) {
        for k in d.keys().filter(|k| b.contains_key(*k)) {
            causes.push(crate::validation::invalid(
                format!("data[{k}]"),
                &Value::from(k.as_str()),
                "duplicate of key present in binaryData",
            ));
        }
    }
    causes
}

/// ConfigMaps have no defaults.
pub fn default(_obj: &mut Value) {}
