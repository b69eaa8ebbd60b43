//! The one error type of the API machinery: an [`ApiError`] renders as a Kubernetes
//! `Status` object (kind, apiVersion, code, reason, message, details.causes).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// One bad field of an invalid object (`details.causes[]` of a 422 `Status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cause {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueNotSupported`,
    /// `FieldValueDuplicate`, `FieldValueForbidden`, `FieldValueTooLong`, ...
    pub reason: String,
    /// Human-readable, e.g. `Required value`.
    pub message: String,
    /// The field path, e.g. `spec.template.spec.domain.devices.disks[0].name`.
    pub field: String,
}

impl Cause {
    /// A cause with the given reason, field and message.
    pub fn new(reason: &str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            reason: reason.to_string(),
            message: message.into(),
            field: field.into(),
        }
    }

    /// `FieldValueRequired` for `field`.
    pub fn required(field: impl Into<String>) -> Self {
        Self::new("FieldValueRequired", field, "Required value")
    }

    /// `FieldValueInvalid` for `field` with a message.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new("FieldValueInvalid", field, message)
    }
}

/// What a `Status` says about the object concerned (`details`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Details {
    pub name: Option<String>,
    pub group: Option<String>,
    /// The resource (plural) or kind, as kube-apiserver fills it.
    pub kind: Option<String>,
    pub causes: Vec<Cause>,
    pub retry_after_seconds: Option<u32>,
}

/// An API error: HTTP code, Kubernetes reason and message, rendered as a `Status`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: u16,
    /// `NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, `BadRequest`, `Gone`/`Expired`, ...
    pub reason: String,
    pub message: String,
    pub details: Option<Details>,
}

impl ApiError {
    /// An error with code, reason and message and no details.
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.to_string(),
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, group: &str, resource: &str, name: &str) -> Self {
        self.details = Some(Details {
            name: Some(name.to_string()).filter(|n| !n.is_empty()),
            group: Some(group.to_string()).filter(|g| !g.is_empty()),
            kind: Some(resource.to_string()),
            ..Details::default()
        });
        self
    }

    /// `qualified` renders `virtualmachines.kubevirt.io` (or `nodes` for the core group).
    fn qualified(group: &str, resource: &str) -> String {
        if group.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}.{group}")
        }
    }

    /// 404: `virtualmachines.kubevirt.io "vm1" not found`.
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        let q = Self::qualified(group, resource);
        Self::new(404, "NotFound", format!("{q} \"{name}\" not found"))
            .with_details(group, resource, name)
    }

    /// 409 on create: `virtualmachines.kubevirt.io "vm1" already exists`.
    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        let q = Self::qualified(group, resource);
        Self::new(
            409,
            "AlreadyExists",
            format!("{q} \"{name}\" already exists"),
        )
        .with_details(group, resource, name)
    }

    /// 409 on a stale resourceVersion.
    pub fn conflict(group: &str, resource: &str, name: &str) -> Self {
        let q = Self::qualified(group, resource);
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {q} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
        )
        .with_details(group, resource, name)
    }

    /// 422: `VirtualMachine.kubevirt.io "bad" is invalid: spec: Required value`.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let q = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let list = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect::<Vec<_>>()
            .join(", ");
        let message = if causes.len() > 1 {
            format!("{q} \"{name}\" is invalid: [{list}]")
        } else {
            format!("{q} \"{name}\" is invalid: {list}")
        };
        let mut e = Self::new(422, "Invalid", message).with_details(group, kind, name);
        if let Some(d) = e.details.as_mut() {
            d.causes = causes;
        }
        e
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 410 Expired: a watch or list from a compacted resourceVersion.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 500 InternalError. The detail goes to the log; the client sees a generic message.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// The `Status` object for this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            let mut details = serde_json::Map::new();
            if let Some(n) = &d.name {
                details.insert("name".into(), json!(n));
            }
            if let Some(g) = &d.group {
                details.insert("group".into(), json!(g));
            }
            if let Some(k) = &d.kind {
                details.insert("kind".into(), json!(k));
            }
            if !d.causes.is_empty() {
                details.insert("causes".into(), json!(d.causes));
            }
            if let Some(r) = d.retry_after_seconds {
                details.insert("retryAfterSeconds".into(), json!(r));
            }
            status["details"] = Value::Object(details);
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_renders_kubectl_message() {
        let s = ApiError::not_found("kubevirt.io", "virtualmachines", "x").to_status();
        assert_eq!(s["message"], "virtualmachines.kubevirt.io \"x\" not found");
        assert_eq!(s["code"], 404);
        assert_eq!(s["details"]["kind"], "virtualmachines");
    }

    #[test]
    fn invalid_lists_causes() {
        let e = ApiError::invalid(
            "kubevirt.io",
            "VirtualMachine",
            "bad",
            vec![Cause::required("spec")],
        );
        assert_eq!(e.code, 422);
        assert_eq!(e.to_status()["details"]["causes"][0]["field"], "spec");
    }
}
