//! [`Condition`]: the condition shape KubeVirt uses on VirtualMachine,
//! VirtualMachineInstance and VirtualMachineInstanceMigration status
//! (`type`, `status`, `reason`, `message`, probe and transition times).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

/// One condition of a KubeVirt object's status.
///
/// ```
/// let c: api::kubevirt::condition::Condition =
///     serde_json::from_str(r#"{"type":"Ready","status":"True"}"#).unwrap();
/// assert!(c.is_true());
/// ```
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Condition {
    /// The condition type, e.g. `Ready`, `Paused`, `LiveMigratable`, `Failure`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// When the condition was last probed.
    pub last_probe_time: Option<Time>,
    /// When the condition last changed status.
    pub last_transition_time: Option<Time>,
    /// A machine-readable, CamelCase reason for the condition's last transition.
    pub reason: Option<String>,
    /// A human-readable message about the last transition.
    pub message: Option<String>,
}

impl Condition {
    /// A condition with the given type and status and nothing else.
    pub fn new(type_: &str, status: bool) -> Self {
        Self {
            type_: type_.to_string(),
            status: if status { "True" } else { "False" }.to_string(),
            ..Self::default()
        }
    }

    /// Whether `status` is `True`.
    pub fn is_true(&self) -> bool {
        self.status == "True"
    }
}

/// The condition of `type_` in `conditions`, if any.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}
