//! Event (`v1`): what controllers and node agents record about objects (`kubectl describe`
//! shows them). Validation follows kube-apiserver's for core/v1 events.

use crate::status::Cause;
use crate::validation::{invalid, unless_one_of};
pub use k8s_openapi::api::core::v1::Event;
use serde_json::Value;

/// Events get no defaults.
pub fn default(_obj: &mut Value) {}

/// Validates an Event: it names the object it is about, in its own namespace, and its
/// type is `Normal` or `Warning`.
///
/// ```
/// use serde_json::json;
/// let ev = json!({"metadata": {"name": "vm1.1", "namespace": "default"}, "type": "Normal",
///                 "involvedObject": {"kind": "VirtualMachine", "name": "vm1", "namespace": "default"}});
/// assert!(api::core::event::validate(&ev).is_empty());
/// ```
pub fn validate(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let involved = obj.get("involvedObject");
    if involved.is_none_or(|i| !i.is_object()) {
        causes.push(Cause::required("involvedObject"));
    }
    let ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    if let Some(ins) = involved
        .and_then(|i| i.get("namespace"))
        .and_then(Value::as_str)
    {
        if !ins.is_empty() && !ns.is_empty() && ins != ns {
            causes.push(invalid(
                "involvedObject.namespace",
                &Value::from(ins),
                "does not match event.namespace",
            ));
        }
    }
    causes.extend(unless_one_of(
        "type",
        obj.get("type").and_then(Value::as_str),
        &["Normal", "Warning"],
    ));
    causes
}
