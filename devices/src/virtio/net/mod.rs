//! virtio-net over a tap (IFF_VNET_HDR) or a datagram socket.
//!
//! Layout: [`device`] holds the MAC, link status, features and lifecycle; [`event_handler`]
//! moves frames on the device thread; [`tap`] opens and configures the tap; [`backend`]
//! chooses between tap and socket; [`metrics`] the counters.

pub mod backend;
pub mod device;
pub mod event_handler;
pub mod metrics;
pub mod tap;

pub use backend::NetBackend;
pub use device::{NetConfig, NetDevice, QUEUE_SIZE, RX_QUEUE, TX_QUEUE};
pub use metrics::NetMetrics;
pub use tap::{Tap, TapError, VNET_HDR_LEN};
