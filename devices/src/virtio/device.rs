//! The contract between a virtio device (block, net, ...) and its transport.
//!
//! The transport owns the registers the driver programs (features, status, queue
//! addresses, vectors) and the queue notification eventfds; on DRIVER_OK it hands the
//! device an [`Activation`]: guest memory, the configured queues and the interrupt. The
//! VMM's device thread then calls [`VirtioDevice::process_queue`] when a queue's eventfd
//! fires and [`VirtioDevice::process_event`] when one of the device's own fds
//! ([`VirtioDevice::event_fds`]) is readable.

use std::os::fd::RawFd;
use std::sync::Arc;

use thiserror::Error;
use virtio_queue::Queue;
use vm_memory::GuestAddressSpace;

use super::interrupt::VirtioInterrupt;

/// Everything a device needs to start processing.
pub struct Activation<M: GuestAddressSpace> {
    /// Guest memory.
    pub mem: M,
    /// Signals the driver.
    pub interrupt: Arc<dyn VirtioInterrupt>,
    /// One queue per [`VirtioDevice::queue_max_sizes`] entry, as the driver configured it
    /// (a queue the driver did not enable is not ready).
    pub queues: Vec<Queue>,
    /// The features the driver accepted.
    pub acked_features: u64,
}

impl<M: GuestAddressSpace> std::fmt::Debug for Activation<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Activation")
            .field("queues", &self.queues)
            .field(
                "acked_features",
                &format_args!("{:#x}", self.acked_features),
            )
            .finish_non_exhaustive()
    }
}

/// What one [`VirtioDevice::poll`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// New chains from the driver.
    pub requests: bool,
    /// Finished backend work (I/O completions).
    pub completions: bool,
    /// Backend work is still outstanding after this look: completions are coming.
    pub in_flight: bool,
}

impl Progress {
    /// Whether anything was found.
    pub fn any(self) -> bool {
        self.requests || self.completions
    }
}

impl std::ops::BitOrAssign for Progress {
    fn bitor_assign(&mut self, other: Self) {
        self.requests |= other.requests;
        self.completions |= other.completions;
        self.in_flight |= other.in_flight;
    }
}

/// Why a device could not be activated; the transport then sets DEVICE_NEEDS_RESET.
#[derive(Debug, Error)]
pub enum ActivateError {
    /// The driver set up a queue the device cannot use.
    #[error("Invalid queue {index}: {reason}")]
    InvalidQueue {
        /// Queue index.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The device is already active (DRIVER_OK without a reset in between).
    #[error("Device already activated")]
    AlreadyActive,
    /// A host resource could not be set up.
    #[error("Failed to set up the device backend")]
    Backend(#[source] std::io::Error),
}

/// A device's lifecycle: nothing to process until the driver sets DRIVER_OK; a reset goes
/// back to `Inactive`, dropping everything the activation handed over.
#[derive(Debug, Default)]
pub enum DeviceState<T> {
    /// Not (yet) activated by the driver.
    #[default]
    Inactive,
    /// Processing queues with this state.
    Activated(T),
}

impl<T> DeviceState<T> {
    /// Whether the device is active.
    pub fn is_activated(&self) -> bool {
        matches!(self, DeviceState::Activated(_))
    }

    /// The active state, if any.
    pub fn active_mut(&mut self) -> Option<&mut T> {
        match self {
            DeviceState::Activated(state) => Some(state),
            DeviceState::Inactive => None,
        }
    }
}

/// A virtio device model, independent of the transport.
///
/// Configuration space accesses come from the guest with any offset and length; a device
/// must bounds-check them (reads outside the structure return zeros, writes are dropped).
pub trait VirtioDevice<M: GuestAddressSpace>: Send {
    /// Virtio device type (`VIRTIO_ID_*`: 1 net, 2 block, 3 console, 4 rng, 19 vsock).
    fn device_type(&self) -> u32;

    /// Maximum size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];

    /// Feature bits the device offers (including transport bits such as VERSION_1).
    fn features(&self) -> u64;

    /// Reads the device-specific configuration at `offset`.
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// Writes the device-specific configuration at `offset`.
    fn write_config(&mut self, offset: u64, data: &[u8]);

    /// Starts the device (the driver set DRIVER_OK).
    fn activate(&mut self, activation: Activation<M>) -> Result<(), ActivateError>;

    /// Stops the device and forgets the activation (the driver wrote 0 to the status).
    /// When this returns, the device no longer touches guest memory.
    fn reset(&mut self);

    /// Whether the device is active.
    fn is_activated(&self) -> bool;

    /// File descriptors of the device's own event sources (I/O completions, tap, ...),
    /// fixed for the device's lifetime; the device thread polls them for readability and
    /// calls [`VirtioDevice::process_event`] with the index in this list.
    fn event_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }

    /// The driver notified queue `index` (the caller has already consumed the eventfd).
    fn process_queue(&mut self, index: usize);

    /// Event source `index` of [`VirtioDevice::event_fds`] is readable.
    fn process_event(&mut self, _index: usize) {}

    /// Whether the device thread may busy-poll this device ([`VirtioDevice::poll`]) instead
    /// of waiting for its eventfds.
    fn pollable(&self) -> bool {
        false
    }

    /// The device thread starts (`true`) or stops (`false`) busy polling. While it polls, a
    /// pollable device keeps the driver's notifications suppressed; stopping turns them
    /// back on and returns whether work arrived meanwhile that no notification will
    /// announce (the thread then polls once more).
    fn set_polling(&mut self, _on: bool) -> bool {
        false
    }

    /// Looks once, without waiting, for work the device would otherwise be woken for (new
    /// chains on its queues, finished backend I/O), and does it.
    fn poll(&mut self) -> Progress {
        Progress::default()
    }
}
