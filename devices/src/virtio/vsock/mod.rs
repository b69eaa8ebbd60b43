//! virtio-vsock in userspace: guest sockets to and from host Unix sockets, one Unix
//! listening socket per VM (for a guest agent).
//!
//! Layout: [`device`] holds the CID, queues and lifecycle; [`event_handler`] moves packets
//! on the device thread; [`muxer`] maps connections to host sockets; [`connection`] is
//! one stream and its credit accounting; [`packet`] the wire header; [`metrics`] the
//! counters.

pub mod connection;
pub mod device;
pub mod event_handler;
pub mod metrics;
pub mod muxer;
pub mod packet;

pub use device::{VsockConfig, VsockDevice, VsockError, QUEUE_SIZE};
pub use metrics::VsockMetrics;
