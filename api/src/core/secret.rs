//! Secret (`v1`): small pieces of sensitive data (node endpoint tokens, cloud-init user
//! data). Validation follows kube-apiserver's: data keys are config keys, `data` values
//! are base64, and a type's required keys are present.

use crate::status::Cause;
use crate::validation::invalid;
pub use k8s_openapi::api::core::v1::Secret;
use serde_json::{json, Value};

/// The longest a key may be (kube-apiserver's `IsConfigMapKey`).
const MAX_KEY: usize = 253;

/// `type` defaults to `Opaque`; the write-only `stringData` is merged into `data`
/// (base64), as kube-apiserver does.
///
/// ```
/// let mut s = serde_json::json!({"metadata": {"name": "s"}, "stringData": {"user": "me"}});
/// api::core::secret::default(&mut s);
/// assert_eq!(s["type"], "Opaque");
/// assert_eq!(s["data"]["user"], "bWU=");
/// assert!(s.get("stringData").is_none());
/// ```
pub fn default(obj: &mut Value) {
    use base64::Engine;
    if obj
        .get("type")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        obj["type"] = json!("Opaque");
    }
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    if let Some(Value::Object(strings)) = map.remove("stringData") {
        let data = map.entry("data").or_insert_with(|| json!({}));
        if data.is_null() {
            *data = json!({});
        }
        if let Some(d) = data.as_object_mut() {
            for (k, v) in strings {
                let text = v
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string());
                let encoded = base64::engine::general_purpose::STANDARD.encode(text);
                d.insert(k, Value::from(encoded));
            }
        }
    }
}

/// Whether `k` is a valid key of a Secret or ConfigMap (kube-apiserver's `IsConfigMapKey`).
pub fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= MAX_KEY
        && k != "."
        && k != ".."
        && !k.starts_with("..")
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

fn valid_base64(v: &str) -> bool {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(v).is_ok()
}

/// Validates a Secret's keys and values.
///
/// ```
/// use serde_json::json;
/// let causes = api::core::secret::validate(&json!({"data": {"token": "not base64!"}}));
/// assert_eq!(causes[0].field, "data[token]");
/// ```
pub fn validate(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    for field in ["data", "stringData"] {
        let Some(map) = obj.get(field).and_then(Value::as_object) else {
            continue;
        };
        for (k, v) in map {
            let path = format!("{field}[{k}]");
            if !valid_key(k) {
                causes.push(invalid(
                    path.clone(),
                    &Value::from(k.as_str()),
                    "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
                ));
            }
            if field == "data" && !v.as_str().is_some_and(valid_base64) {
                causes.push(invalid(path, v, "must be base64-encoded bytes"));
            }
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values() {
        assert!(validate(&json!({"data": {"token": "dG9rZW4=", "a.b_c-d": ""}})).is_empty());
        assert_eq!(validate(&json!({"data": {"../x": "AA=="}})).len(), 1);
        assert_eq!(
            validate(&json!({"stringData": {"ok": "plain text"}})).len(),
            0
        );
        assert_eq!(validate(&json!({"data": {"k": 5}})).len(), 1);
    }
}
