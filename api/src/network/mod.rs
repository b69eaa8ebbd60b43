//! Network resources: the `k8s.cni.cncf.io/v1` group (multus' NetworkAttachmentDefinition)
//! and the `nmstate.io/v1` group ([`policy`]: node network policies and their per-node
//! enactments).

pub mod attachment;
pub mod policy;

/// The multus API group.
pub const GROUP: &str = "k8s.cni.cncf.io";
/// The served version.
pub const VERSION: &str = "v1";
