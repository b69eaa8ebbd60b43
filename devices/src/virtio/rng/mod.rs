//! virtio-rng: an entropy source for the guest (`/dev/hwrng`), fed by the host's
//! `getrandom(2)`.
//!
//! Layout: [`device`] holds features and the lifecycle; [`event_handler`] fills the
//! driver's buffers on the device thread; [`metrics`] the counters.

pub mod device;
pub mod event_handler;
pub mod metrics;

pub use device::{RngDevice, MAX_REQUEST_BYTES, QUEUE_SIZE};
pub use metrics::RngMetrics;
