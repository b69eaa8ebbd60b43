//! NetworkAttachmentDefinition (`k8s.cni.cncf.io/v1`): a secondary network (a CNI
//! configuration) that VMIs join through a `multus` network.

use crate::status::Cause;
use crate::validation::invalid;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_with::skip_serializing_none;

/// A secondary network: a CNI configuration VMIs can attach to.
///
/// ```
/// use api::network::attachment::NetworkAttachmentDefinition;
/// let nad: NetworkAttachmentDefinition = serde_json::from_value(serde_json::json!({
///     "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
///     "metadata": {"name": "br1"},
///     "spec": {"config": "{\"cniVersion\":\"0.3.1\",\"type\":\"bridge\",\"bridge\":\"br1\"}"}})).unwrap();
/// assert_eq!(nad.cni_type().as_deref(), Some("bridge"));
/// ```
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
#[schemars(
    description = "NetworkAttachmentDefinition is a CRD schema specified by the Network Plumbing Working Group to express the intent for attaching pods to one or more logical or physical networks."
)]
pub struct NetworkAttachmentDefinition {
    /// APIVersion defines the versioned schema of this representation of an object: `k8s.cni.cncf.io/v1`.
    pub api_version: String,
    /// Kind is a string value representing the REST resource this object represents.
    pub kind: String,
    /// Standard object metadata.
    pub metadata: ObjectMeta,
    /// NetworkAttachmentDefinition spec defines the desired state of a network attachment.
    pub spec: Option<NetworkAttachmentDefinitionSpec>,
}

/// The network's CNI configuration.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct NetworkAttachmentDefinitionSpec {
    /// NetworkAttachmentDefinition config is a JSON-formatted CNI configuration.
    pub config: Option<String>,
}

impl NetworkAttachmentDefinition {
    /// The `type` of the CNI configuration (`bridge`, `macvlan`, `sriov`, ...), if any.
    pub fn cni_type(&self) -> Option<String> {
        let config = self.spec.as_ref()?.config.as_deref()?;
        let v: Value = serde_json::from_str(config).ok()?;
        v.get("type")
            .or_else(|| v.pointer("/plugins/0/type"))
            .and_then(Value::as_str)
            .map(str::to_string)
    }
}

/// NetworkAttachmentDefinitions get no defaults.
pub fn default(_obj: &mut Value) {}

/// Validates the CNI configuration: when given, it is a JSON object (multus' admission check).
pub fn validate(obj: &Value) -> Vec<Cause> {
    let Some(config) = obj.pointer("/spec/config").and_then(Value::as_str) else {
        return Vec::new();
    };
    if config.trim().is_empty() {
        return Vec::new();
    }
    match serde_json::from_str::<Value>(config) {
        Ok(Value::Object(_)) => Vec::new(),
        Ok(_) => vec![invalid(
            "spec.config",
            &Value::from(config),
            "must be a JSON object",
        )],
        Err(e) => vec![invalid(
            "spec.config",
            &Value::from(config),
            &format!("invalid JSON: {e}"),
        )],
    }
}
