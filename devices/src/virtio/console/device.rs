//! The virtio-console device: one port (no VIRTIO_CONSOLE_F_MULTIPORT), a receive and a
//! transmit queue, input from one host fd and output to another.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use vm_memory::GuestAddressSpace;

use super::metrics::ConsoleMetrics;
use crate::virtio::device_type;
use crate::virtio::queue_device::{DeviceCore, QueueDevice};

/// Queue size offered to the driver.
pub const QUEUE_SIZE: u16 = 256;
/// Receive (host to guest) queue index.
pub const RX_QUEUE: usize = 0;
/// Transmit (guest to host) queue index.
pub const TX_QUEUE: usize = 1;

/// A virtio console.
///
/// `input` (if any) and `output` must be non-blocking: a pipe, a socket or a pty. Output
/// the host side does not drain in time is dropped (and counted), as a serial line would
/// lose it, so a stuck reader never stalls the device thread.
///
/// ```
/// use std::os::fd::OwnedFd;
/// use std::os::unix::net::UnixStream;
/// use std::sync::Arc;
/// use devices::virtio::console::ConsoleDevice;
/// use devices::virtio::VirtioDevice;
/// use vm_memory::GuestMemoryMmap;
///
/// let (ours, _host) = UnixStream::pair().unwrap();
/// ours.set_nonblocking(true).unwrap();
/// let input = OwnedFd::from(ours.try_clone().unwrap());
/// let console = ConsoleDevice::<Arc<GuestMemoryMmap>>::new("hvc0", Some(input), OwnedFd::from(ours));
/// assert_eq!(console.device_type(), 3);
/// assert_eq!(console.event_fds().len(), 1);
/// ```
pub struct ConsoleDevice<M: GuestAddressSpace> {
    pub(super) id: String,
    pub(super) input: Option<OwnedFd>,
    pub(super) output: OwnedFd,
    /// The input reached end of file: stop reading it.
    pub(super) input_closed: bool,
    pub(super) core: DeviceCore<M>,
    pub(super) metrics: Arc<ConsoleMetrics>,
}

impl<M: GuestAddressSpace> std::fmt::Debug for ConsoleDevice<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleDevice")
            .field("id", &self.id)
            .field("active", &self.core.is_activated())
            .finish_non_exhaustive()
    }
}

impl<M: GuestAddressSpace> ConsoleDevice<M> {
    /// A console reading guest input from `input` and writing guest output to `output`.
    pub fn new(id: &str, input: Option<OwnedFd>, output: OwnedFd) -> Self {
        ConsoleDevice {
            id: id.to_string(),
            input,
            output,
            input_closed: false,
            // cols/rows/max_nr_ports/emerg_wr exist only with features we do not offer.
            core: DeviceCore::new(
                "virtio-console",
                device_type::CONSOLE,
                0,
                &[QUEUE_SIZE; 2],
                Vec::new(),
            ),
            metrics: Arc::new(ConsoleMetrics::default()),
        }
    }

    /// The device's counters.
    pub fn metrics(&self) -> Arc<ConsoleMetrics> {
        self.metrics.clone()
    }
}

impl<M> QueueDevice<M> for ConsoleDevice<M>
where
    M: GuestAddressSpace + Send + 'static,
{
    fn core(&self) -> &DeviceCore<M> {
        &self.core
    }

    fn core_mut(&mut self) -> &mut DeviceCore<M> {
        &mut self.core
    }

    fn own_fds(&self) -> Vec<RawFd> {
        self.input.iter().map(|fd| fd.as_raw_fd()).collect()
    }

    fn queue_notified(&mut self, index: usize) {
        match index {
            RX_QUEUE => self.process_input(),
            TX_QUEUE => self.process_output(),
            _ => {}
        }
    }

    fn fd_ready(&mut self, index: usize) {
        if index == 0 {
            self.process_input();
        }
    }
}
