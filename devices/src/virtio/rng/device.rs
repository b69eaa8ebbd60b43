//! The virtio-rng device: one request queue, no configuration space.

use std::sync::Arc;

use vm_memory::GuestAddressSpace;

use super::metrics::RngMetrics;
use crate::virtio::active_queues::ActiveQueues;
use crate::virtio::device::{ActivateError, Activation, DeviceState, VirtioDevice};
use crate::virtio::{device_type, features, LogLimiter};

/// Queue size offered to the driver.
pub const QUEUE_SIZE: u16 = 256;
/// Most bytes handed out per request; a bigger buffer is filled this far (the used length
/// tells the driver), so one request cannot keep the device thread busy for long.
pub const MAX_REQUEST_BYTES: u32 = 64 * 1024;

/// A virtio entropy device.
///
/// ```
/// use std::sync::Arc;
/// use devices::virtio::rng::RngDevice;
/// use devices::virtio::VirtioDevice;
/// use vm_memory::GuestMemoryMmap;
///
/// let rng = RngDevice::<Arc<GuestMemoryMmap>>::new();
/// assert_eq!(rng.device_type(), 4);
/// assert_eq!(rng.queue_max_sizes(), &[256]);
/// ```
pub struct RngDevice<M: GuestAddressSpace> {
    queue_sizes: [u16; 1],
    pub(super) state: DeviceState<ActiveQueues<M>>,
    pub(super) metrics: Arc<RngMetrics>,
    pub(super) log: LogLimiter,
}

impl<M: GuestAddressSpace> std::fmt::Debug for RngDevice<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RngDevice")
            .field("active", &self.state.is_activated())
            .finish_non_exhaustive()
    }
}

impl<M: GuestAddressSpace> Default for RngDevice<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M: GuestAddressSpace> RngDevice<M> {
    /// An inactive entropy device.
    pub fn new() -> Self {
        RngDevice {
            queue_sizes: [QUEUE_SIZE],
            state: DeviceState::Inactive,
            metrics: Arc::new(RngMetrics::default()),
            log: LogLimiter::default(),
        }
    }

    /// The device's counters.
    pub fn metrics(&self) -> Arc<RngMetrics> {
        self.metrics.clone()
    }
}

impl<M> VirtioDevice<M> for RngDevice<M>
where
    M: GuestAddressSpace + Send + 'static,
{
    fn device_type(&self) -> u32 {
        device_type::RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        features::VERSION_1 | features::RING_INDIRECT_DESC | features::RING_EVENT_IDX
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        // virtio-rng has no configuration space.
        data.fill(0);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    fn activate(&mut self, activation: Activation<M>) -> Result<(), ActivateError> {
        self.state.activate(activation, 1, "virtio-rng")
    }

    fn reset(&mut self) {
        // Requests are served synchronously: nothing is in flight.
        self.state = DeviceState::Inactive;
    }

    fn is_activated(&self) -> bool {
        self.state.is_activated()
    }

    fn process_queue(&mut self, index: usize) {
        self.handle_queue(index);
    }
}
