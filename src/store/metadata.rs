//! Object metadata the server owns or checks: names (RFC 1123), uids, timestamps,
//! generations, finalizers and owner references, read from and written to JSON objects.

use serde_json::{json, Map, Value};
use std::time::SystemTime;

/// The current time as Kubernetes writes it (`2026-11-25T19:16:44Z`).
pub(crate) fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// A fresh object uid.
pub(crate) fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Five characters for `generateName`, from Kubernetes' alphabet without vowels.
pub(crate) fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(5)
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Checks a name: an RFC 1123 label (namespaces) or subdomain (everything else). Returns
/// the message of the `FieldValueInvalid` cause when it is not one.
pub(crate) fn check_name(name: &str, label_only: bool) -> Result<(), String> {
    if label_only {
        if name.len() > 63 {
            return Err("must be no more than 63 characters".to_string());
        }
        if !is_label(name) {
            return Err(DNS1123_LABEL_MSG.to_string());
        }
    } else {
        if name.len() > 253 {
            return Err("must be no more than 253 characters".to_string());
        }
        if !name.split('.').all(is_label) {
            return Err(DNS1123_SUBDOMAIN_MSG.to_string());
        }
    }
    Ok(())
}

/// `metadata` as a mutable map, created if absent or not an object.
pub(crate) fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata was just made an object")
}

pub(crate) fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

pub(crate) fn name(obj: &Value) -> &str {
    meta_str(obj, "name").unwrap_or("")
}

pub(crate) fn uid(obj: &Value) -> Option<&str> {
    meta_str(obj, "uid")
}

pub(crate) fn resource_version(obj: &Value) -> Option<&str> {
    meta_str(obj, "resourceVersion").filter(|s| !s.is_empty())
}

pub(crate) fn is_deleting(obj: &Value) -> bool {
    meta_str(obj, "deletionTimestamp").is_some()
}

pub(crate) fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn set_finalizers(obj: &mut Value, finalizers: &[String]) {
    let meta = meta_mut(obj);
    if finalizers.is_empty() {
        meta.remove("finalizers");
    } else {
        meta.insert("finalizers".into(), json!(finalizers));
    }
}

pub(crate) fn generation(obj: &Value) -> i64 {
    obj.pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

/// One `metadata.ownerReferences[]` entry, as far as the collector needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnerRef {
    pub uid: String,
    pub block_owner_deletion: bool,
}

pub(crate) fn owner_refs(obj: &Value) -> Vec<OwnerRef> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|r| {
                    Some(OwnerRef {
                        uid: r.get("uid")?.as_str()?.to_string(),
                        block_owner_deletion: r
                            .get("blockOwnerDeletion")
                            .and_then(Value::as_bool)
                            .unwrap_or(false),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Removes the owner references to `owner_uid`.
pub(crate) fn remove_owner_ref(obj: &mut Value, owner_uid: &str) {
    let meta = meta_mut(obj);
    if let Some(Value::Array(refs)) = meta.get_mut("ownerReferences") {
        refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(owner_uid));
        if refs.is_empty() {
            meta.remove("ownerReferences");
        }
    }
}

/// The object without `metadata` and `status`: what `generation` tracks.
pub(crate) fn spec_part(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    v
}

/// Removes the field at a path such as `spec.template.spec.domain.devices.disks[0].foo`.
pub(crate) fn remove_path(obj: &mut Value, path: &str) {
    let mut steps: Vec<Result<&str, usize>> = Vec::new();
    for part in path.split('.') {
        let (field, rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !field.is_empty() {
            steps.push(Ok(field));
        }
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            match idx.trim_end_matches(']').parse() {
                Ok(i) => steps.push(Err(i)),
                Err(_) => return,
            }
        }
    }
    let Some((last, parents)) = steps.split_last() else {
        return;
    };
    let mut cur = obj;
    for step in parents {
        let next = match step {
            Ok(f) => cur.get_mut(*f),
            Err(i) => cur.get_mut(*i),
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    match (last, cur) {
        (Ok(f), Value::Object(m)) => {
            m.remove(*f);
        }
        (Err(i), Value::Array(a)) if *i < a.len() => {
            a.remove(*i);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("vm-1", true).is_ok());
        assert!(check_name("a.b-c", false).is_ok());
        assert!(check_name("a.b", true).is_err());
        for bad in ["", "Vm", "-a", "a-", "a_b", "a..b", ".a"] {
            assert!(check_name(bad, false).is_err(), "{bad}");
        }
        assert!(check_name(&"a".repeat(64), true).is_err());
        assert!(check_name(&"a".repeat(63), true).is_ok());
        assert_eq!(name_suffix().len(), 5);
    }

    #[test]
    fn remove_paths() {
        let mut o = json!({"spec": {"foo": 1, "list": [{"a": 1, "x": 2}], "keep": true}});
        remove_path(&mut o, "spec.foo");
        remove_path(&mut o, "spec.list[0].x");
        remove_path(&mut o, "spec.missing.deeper");
        assert_eq!(o, json!({"spec": {"list": [{"a": 1}], "keep": true}}));
    }

    #[test]
    fn owner_references() {
        let mut o = json!({"metadata": {"ownerReferences": [
            {"uid": "a", "blockOwnerDeletion": true}, {"uid": "b"}]}});
        assert_eq!(owner_refs(&o).len(), 2);
        assert!(owner_refs(&o)[0].block_owner_deletion);
        remove_owner_ref(&mut o, "a");
        remove_owner_ref(&mut o, "b");
        assert!(o["metadata"].get("ownerReferences").is_none());
    }
}
