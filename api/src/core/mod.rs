//! The core `v1` kinds monovirt serves (Namespace, Node, PersistentVolumeClaim,
//! PersistentVolume, Secret, ConfigMap, Event), typed
//! by `k8s-openapi`, with kube-apiserver's defaulting, validation and table columns for them.

pub mod columns;
pub mod configmap;
pub mod event;
pub mod namespace;
pub mod node;
pub mod pv;
pub mod pvc;
pub mod secret;
pub mod volume;

/// The API version of the core group.
pub const VERSION: &str = "v1";
