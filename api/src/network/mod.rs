//! The `k8s.cni.cncf.io/v1` group (multus): NetworkAttachmentDefinition.

pub mod attachment;

/// The API group.
pub const GROUP: &str = "k8s.cni.cncf.io";
/// The served version.
pub const VERSION: &str = "v1";
