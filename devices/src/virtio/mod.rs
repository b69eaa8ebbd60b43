//! Virtio devices and their PCI transport.
//!
//! Layout: [`device`] is the [`VirtioDevice`] trait every device implements and its
//! [`DeviceState`] lifecycle; [`queue_device`] the plumbing every device here shares (type,
//! features, queue sizes, configuration space, activation and reset: [`DeviceCore`]) and
//! the one [`VirtioDevice`] implementation over it; `active_queues` the state of an
//! activated device and the
//! queue loop all devices share (notification suppression, used ring, interrupts,
//! DEVICE_NEEDS_RESET); [`interrupt`] how a device signals the driver; [`transport`] the
//! modern virtio-pci transport; one folder per device ([`block`], [`net`], [`console`],
//! [`rng`], [`vsock`]); [`log_limiter`] keeps guest-triggerable log lines rate-limited.
//!
//! Devices run on the VMM's device thread: the transport (on vCPU threads) activates them
//! with guest memory, queues and an interrupt; the device thread calls
//! [`VirtioDevice::process_queue`] when a queue's ioeventfd fires and
//! [`VirtioDevice::process_event`] for the device's own fds.

pub(crate) mod active_queues;
pub mod block;
pub mod console;
pub mod counter;
pub mod device;
pub mod interrupt;
pub mod iovec;
pub mod log_limiter;
pub mod net;
pub mod queue_device;
pub mod rng;
#[cfg(test)]
pub(crate) mod test_driver;
pub mod transport;
pub mod vsock;

pub use counter::Counter;
pub use device::{ActivateError, Activation, DeviceState, Progress, VirtioDevice};
pub use interrupt::{VirtioInterrupt, VirtioInterruptType};
pub use log_limiter::LogLimiter;
pub use queue_device::{DeviceCore, QueueDevice};

/// Virtio device types (`VIRTIO_ID_*`).
pub mod device_type {
    use virtio_bindings::virtio_ids;
    /// Network card.
    pub const NET: u32 = virtio_ids::VIRTIO_ID_NET;
    /// Block device.
    pub const BLOCK: u32 = virtio_ids::VIRTIO_ID_BLOCK;
    /// Console.
    pub const CONSOLE: u32 = virtio_ids::VIRTIO_ID_CONSOLE;
    /// Entropy source.
    pub const RNG: u32 = virtio_ids::VIRTIO_ID_RNG;
    /// Socket device.
    pub const VSOCK: u32 = virtio_ids::VIRTIO_ID_VSOCK;
}

/// Device-independent feature bits.
pub mod features {
    use virtio_bindings::{virtio_config, virtio_ring};
    /// Virtio 1.x (modern) device: mandatory for the modern PCI transport.
    pub const VERSION_1: u64 = 1 << virtio_config::VIRTIO_F_VERSION_1;
    /// Indirect descriptor tables.
    pub const RING_INDIRECT_DESC: u64 = 1 << virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;
    /// used_event / avail_event notification suppression.
    pub const RING_EVENT_IDX: u64 = 1 << virtio_ring::VIRTIO_RING_F_EVENT_IDX;
}

/// Device status bits.
pub mod status {
    use virtio_bindings::virtio_config;
    /// The guest found the device.
    pub const ACKNOWLEDGE: u8 = virtio_config::VIRTIO_CONFIG_S_ACKNOWLEDGE as u8;
    /// The guest has a driver for it.
    pub const DRIVER: u8 = virtio_config::VIRTIO_CONFIG_S_DRIVER as u8;
    /// The driver is ready to drive the device.
    pub const DRIVER_OK: u8 = virtio_config::VIRTIO_CONFIG_S_DRIVER_OK as u8;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u8 = virtio_config::VIRTIO_CONFIG_S_FEATURES_OK as u8;
    /// The device hit an error and needs a reset.
    pub const DEVICE_NEEDS_RESET: u8 = virtio_config::VIRTIO_CONFIG_S_NEEDS_RESET as u8;
    /// The driver gave up on the device.
    pub const FAILED: u8 = virtio_config::VIRTIO_CONFIG_S_FAILED as u8;
}
