//! The node-local image store: container images that hold VM disks and kernels, imported
//! from files (`monovirt image import REF PATH`) and resolved by the node agent for
//! `containerDisk.image` and `firmware.kernelBoot.container.image`. Pulling from
//! registries is not done here (yet): images arrive as files.
//!
//! - [`reference`]: image references and their canonical form (`docker.io/library/x:latest`);
//! - [`layout`]: reading an OCI image layout (`oci-layout`, `index.json`, manifests,
//!   blobs verified by sha256), or a `docker save` archive's `manifest.json`;
//! - [`layer`]: unpacking one layer (tar, optionally gzip) with OCI whiteouts;
//! - [`store`]: the store on disk (`<data-dir>/images/`), import and resolution with
//!   KubeVirt's layouts (a container disk under `/disk/`, kernel and initrd at the paths
//!   the VMI names).
//!
//! Trust boundary: an image is input from the operator, not from a guest, but its archives
//! are still unpacked defensively: entries may not escape the image root, and every blob
//! must match its digest.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod layer;
pub mod layout;
pub mod reference;
pub mod store;

pub use reference::Reference;
pub use store::{ImageError, ImageStore, Imported};
