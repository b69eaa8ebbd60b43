//! Networks of a VirtualMachineInstance (`spec.networks[]`): the pod network or a multus
//! NetworkAttachmentDefinition, each the backend of the interface of the same name.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

/// A named network with exactly one source (`pod` or `multus`).
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Network {
    /// The network name; interfaces refer to it. Must be a DNS-1123 label.
    pub name: String,
    /// The default pod network.
    pub pod: Option<PodNetwork>,
    /// A multus network (a NetworkAttachmentDefinition).
    pub multus: Option<MultusNetwork>,
}

/// The pod network.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct PodNetwork {
    /// The guest-side IPv4 CIDR for masquerade. Defaults to `10.0.2.0/24`.
    #[serde(rename = "vmNetworkCIDR")]
    pub vm_network_cidr: Option<String>,
    /// The guest-side IPv6 CIDR for masquerade. Defaults to `fd10:0:2::/120`.
    #[serde(rename = "vmIPv6NetworkCIDR")]
    pub vm_ipv6_network_cidr: Option<String>,
}

/// A multus network.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct MultusNetwork {
    /// The NetworkAttachmentDefinition, `name` or `namespace/name`.
    pub network_name: String,
    /// Use this network as the default route (instead of the pod network).
    pub default: Option<bool>,
}
