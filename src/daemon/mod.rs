//! What running monovirt as a host service takes, beside the roles themselves:
//!
//! - [`config`]: `/etc/monovirt/config.toml`, flags over it, defaults under both;
//! - [`notify`]: systemd's readiness, status and watchdog notifications;
//! - [`probe`]: asks the running API over its Unix socket whether it answers;
//! - [`kubeconfig`]: the kubeconfig `monovirt kubeconfig` prints for kubectl;
//! - [`install`]: `monovirt install`: binary, unit and default config into place;
//! - [`storage_class`]: the config's storage classes as StorageClass objects.

pub mod config;
pub mod install;
pub mod kubeconfig;
pub mod notify;
pub mod probe;
pub mod storage_class;
