//! The virtio-rng device: one request queue, no configuration space.

use std::sync::Arc;

use vm_memory::GuestAddressSpace;

use super::metrics::RngMetrics;
use crate::virtio::device_type;
use crate::virtio::queue_device::{DeviceCore, QueueDevice};

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
    pub(super) core: DeviceCore<M>,
    pub(super) metrics: Arc<RngMetrics>,
}

impl<M: GuestAddressSpace> std::fmt::Debug for RngDevice<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RngDevice")
            .field("active", &self.core.is_activated())
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
            // virtio-rng has no configuration space.
            core: DeviceCore::new("virtio-rng", device_type::RNG, 0, &[QUEUE_SIZE], Vec::new()),
            metrics: Arc::new(RngMetrics::default()),
        }
    }

    /// The device's counters.
    pub fn metrics(&self) -> Arc<RngMetrics> {
        self.metrics.clone()
    }
}

impl<M> QueueDevice<M> for RngDevice<M>
where
    M: GuestAddressSpace + Send + 'static,
{
    fn core(&self) -> &DeviceCore<M> {
        &self.core
    }

    fn core_mut(&mut self) -> &mut DeviceCore<M> {
        &mut self.core
    }

    // Requests are served synchronously: nothing is in flight at a reset.
    fn queue_notified(&mut self, index: usize) {
        self.handle_queue(index);
    }
}
