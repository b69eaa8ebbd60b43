//! Applying typed changes to a stored JSON object without losing what the types do not
//! model: defaulting decodes the object, changes the typed value, and [`overlay`]s the result
//! back onto the original JSON, so unknown fields (kept under `fieldValidation=Warn|Ignore`)
//! survive.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// Copies every field of `src` onto `dst`, recursively: objects are merged key by key,
/// arrays element by element (extra `src` elements are appended), anything else replaced.
/// Fields only in `dst` are kept.
///
/// ```
/// use serde_json::json;
/// let mut dst = json!({"a": {"x": 1, "keep": true}, "l": [{"n": "d"}]});
/// api::overlay::overlay(&mut dst, &json!({"a": {"x": 2}, "l": [{"n": "d", "bus": "virtio"}, {"n": "e"}]}));
/// assert_eq!(dst, json!({"a": {"x": 2, "keep": true}, "l": [{"n": "d", "bus": "virtio"}, {"n": "e"}]}));
/// ```
pub fn overlay(dst: &mut Value, src: &Value) {
    match (dst, src) {
        (Value::Object(d), Value::Object(s)) => {
            for (k, v) in s {
                match d.get_mut(k) {
                    Some(existing) => overlay(existing, v),
                    None => {
                        d.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(d), Value::Array(s)) => {
            for (i, v) in s.iter().enumerate() {
                match d.get_mut(i) {
                    Some(existing) => overlay(existing, v),
                    None => d.push(v.clone()),
                }
            }
        }
        (d, s) => *d = s.clone(),
    }
}

/// Decodes `obj` as `T`, lets `change` modify it, and overlays the result onto `obj`.
/// An object that does not decode is left alone (validation reports it).
pub fn apply_typed<T: DeserializeOwned + Serialize>(obj: &mut Value, change: impl FnOnce(&mut T)) {
    let Ok(mut typed) = serde_json::from_value::<T>(obj.clone()) else {
        return;
    };
    change(&mut typed);
    if let Ok(after) = serde_json::to_value(&typed) {
        overlay(obj, &after);
    }
}
