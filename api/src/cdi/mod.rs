//! The `cdi.kubevirt.io/v1beta1` group (the Containerized Data Importer): DataVolume.

pub mod datavolume;
pub mod validation;

/// The API group.
pub const GROUP: &str = "cdi.kubevirt.io";
/// The served version.
pub const VERSION: &str = "v1beta1";
