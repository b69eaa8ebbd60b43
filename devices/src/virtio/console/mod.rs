//! virtio-console: a single-port console (the guest's `hvc0`), a second console beside
//! the serial port, streaming to and from host file descriptors.
//!
//! Layout: [`device`] holds the lifecycle and the host fds; [`event_handler`] moves bytes
//! on the device thread; [`metrics`] the counters.

pub mod device;
pub mod event_handler;
pub mod metrics;

pub use device::{ConsoleDevice, QUEUE_SIZE, RX_QUEUE, TX_QUEUE};
pub use metrics::ConsoleMetrics;
