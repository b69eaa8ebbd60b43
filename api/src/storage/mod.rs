//! The `storage.k8s.io/v1` group: StorageClass.

pub mod storageclass;

/// The API group.
pub const GROUP: &str = "storage.k8s.io";
/// The served version.
pub const VERSION: &str = "v1";
