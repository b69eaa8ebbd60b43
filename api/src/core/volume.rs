//! What PersistentVolumes and PersistentVolumeClaims share, as kube-apiserver checks them:
//! a `spec` object, the access modes, a storage size that parses and is positive, and the defaults of
//! `spec.volumeMode` and `status.phase`.

use crate::quantity;
use crate::status::Cause;
use crate::validation::{forbidden, invalid, not_supported, required};
use serde_json::{json, Map, Value};

/// The access modes Kubernetes knows.
pub const ACCESS_MODES: &[&str] = &[
    "ReadWriteOnce",
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOncePod",
];

/// Defaults `spec.volumeMode` to `Filesystem` and `status.phase` to `Pending`; hands the
/// spec to `spec_defaults` first for the kind's own spec defaults.
pub fn default(obj: &mut Value, spec_defaults: impl FnOnce(&mut Map<String, Value>)) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    if let Some(spec) = map.get_mut("spec").and_then(Value::as_object_mut) {
        spec_defaults(spec);
        if spec.get("volumeMode").is_none_or(Value::is_null) {
            spec.insert("volumeMode".into(), json!("Filesystem"));
        }
    }
    let status = map.entry("status").or_insert_with(|| json!({}));
    if let Some(s) = status.as_object_mut() {
        if s.get("phase")
            .is_none_or(|p| p.as_str().unwrap_or("").is_empty())
        {
            s.insert("phase".into(), json!("Pending"));
        }
    }
}

/// Validates a volume kind: `spec` must be an object, then its access modes
/// ([`access_mode_causes`]) and its storage size at `size_pointer` ([`size_cause`], with
/// `size_field` and `size_missing`); hands the spec to `spec_causes` for the kind's own
/// checks after those.
pub fn validate(
    obj: &Value,
    size_pointer: &str,
    size_field: &str,
    size_missing: &str,
    spec_causes: impl FnOnce(&Value, &mut Vec<Cause>),
) -> Vec<Cause> {
    let Some(spec) = obj.get("spec").filter(|s| s.is_object()) else {
        return vec![Cause::required("spec")];
    };
    let mut causes = access_mode_causes(spec);
    causes.extend(size_cause(spec, size_pointer, size_field, size_missing));
    spec_causes(spec, &mut causes);
    causes
}

/// The causes against `spec.accessModes`: at least one, each known, and
/// `ReadWriteOncePod` only alone.
pub fn access_mode_causes(spec: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let modes = spec.get("accessModes").and_then(Value::as_array);
    if modes.is_none_or(Vec::is_empty) {
        causes.push(required(
            "spec.accessModes",
            "at least 1 access mode is required",
        ));
    }
    for (i, m) in modes.into_iter().flatten().enumerate() {
        if !ACCESS_MODES.contains(&m.as_str().unwrap_or("")) {
            causes.push(not_supported(
                format!("spec.accessModes[{i}]"),
                m,
                ACCESS_MODES,
            ));
        }
    }
    if modes.is_some_and(|m| m.len() > 1 && m.iter().any(|x| x == "ReadWriteOncePod")) {
        causes.push(forbidden(
            "spec.accessModes",
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
    causes
}

/// The cause against a storage size at `pointer` in `spec` (reported as `field`, or as
/// `missing` when absent), if it is absent, unparsable, zero or negative.
pub fn size_cause(spec: &Value, pointer: &str, field: &str, missing: &str) -> Option<Cause> {
    let Some(q) = spec.pointer(pointer) else {
        return Some(Cause::required(missing));
    };
    let s = q
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| q.to_string());
    match quantity::parse(&s) {
        Ok(p) if p.is_zero() || p.is_negative() => {
            Some(invalid(field, q, "must be greater than zero"))
        }
        Ok(_) => None,
        Err(e) => Some(invalid(field, q, &e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_modes_are_checked_as_kube_does() {
        assert!(access_mode_causes(&json!({"accessModes": ["ReadWriteOnce"]})).is_empty());
        let none = access_mode_causes(&json!({}));
        assert_eq!(none[0].field, "spec.accessModes");
        let bad = access_mode_causes(&json!({"accessModes": ["ReadWriteOnce", "Sometimes"]}));
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].field, "spec.accessModes[1]");
        let pod = access_mode_causes(&json!({"accessModes": ["ReadWriteOncePod", "ReadOnlyMany"]}));
        assert_eq!(pod[0].field, "spec.accessModes");
    }

    #[test]
    fn sizes_must_parse_and_be_positive() {
        let at = |v: Value| {
            size_cause(
                &json!({"capacity": {"storage": v}}),
                "/capacity/storage",
                "spec.capacity.storage",
                "spec.capacity[storage]",
            )
        };
        assert!(at(json!("1Gi")).is_none());
        assert_eq!(at(json!("0")).expect("zero").field, "spec.capacity.storage");
        assert_eq!(
            at(json!("lots")).expect("junk").field,
            "spec.capacity.storage"
        );
        let missing = size_cause(
            &json!({}),
            "/capacity/storage",
            "spec.capacity.storage",
            "spec.capacity[storage]",
        );
        assert_eq!(missing.expect("missing").field, "spec.capacity[storage]");
    }
}
