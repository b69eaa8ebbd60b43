//! Storage: the local volume provisioner, CDI-style population of volumes, and the disks a
//! VMI's volumes become.
//!
//! - [`class`]: StorageClasses of the local provisioner (a directory per class);
//! - [`provisioner`]: PVC → PV + sparse `disk.img`, protection finalizers, reclaim;
//! - [`populator`]: imports (HTTP), uploads, clones and blanks into bound claims, reported
//!   through CDI's claim annotations;
//! - [`import`]: the streaming import pipeline ([`source`] → [`checksum`] → [`format`]
//!   detection → [`sparse`] writes or [`qemu_img`] conversion);
//! - [`upload`]: upload tokens and the upload endpoint;
//! - [`datavolume`]: the DataVolume controller;
//! - [`controller`]: the caches and reconcile loops `monovirt serve` runs;
//! - [`annotation`]: CDI's claim annotations.

// Tests unwrap freely: a failure there is the test failing.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod annotation;
pub mod checksum;
pub mod class;
pub mod cloudinit;
pub mod controller;
pub mod datavolume;
pub mod format;
pub mod import;
pub mod populator;
pub mod provisioner;
pub mod qemu_img;
pub mod source;
pub mod sparse;
pub mod upload;
pub mod uploader;
pub mod volume;

pub use controller::run;
