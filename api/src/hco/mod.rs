//! The `hco.kubevirt.io/v1beta1` group: HyperConverged, the singleton holding cluster-wide
//! virtualization settings (OpenShift Virtualization's configuration object).

pub mod hyperconverged;

/// The API group.
pub const GROUP: &str = "hco.kubevirt.io";
/// The served version.
pub const VERSION: &str = "v1beta1";
