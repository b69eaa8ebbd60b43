//! The virtio-vsock device: receive, transmit and event queues, and the guest CID.

use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;
use vm_memory::GuestAddressSpace;

use super::metrics::VsockMetrics;
use super::muxer::Muxer;
use super::packet::HDR_LEN;
use crate::virtio::device_type;
use crate::virtio::queue_device::{DeviceCore, QueueDevice};

/// Queue size offered to the driver.
pub const QUEUE_SIZE: u16 = 256;
/// Receive queue index.
pub const RX_QUEUE: usize = 0;
/// Transmit queue index.
pub const TX_QUEUE: usize = 1;
/// Event queue index (transport events; we never send any).
pub const EVENT_QUEUE: usize = 2;
/// Largest payload of one packet, both ways.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// How to build a vsock device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VsockConfig {
    /// The guest's context ID (3 or more: 0-2 are reserved).
    pub cid: u64,
    /// The VM's host-side Unix socket.
    pub socket: PathBuf,
}

/// Errors creating a vsock device.
#[derive(Debug, Error)]
pub enum VsockError {
    /// CIDs 0, 1, 2 and u32::MAX are reserved.
    #[error("Invalid guest CID {0}")]
    InvalidCid(u64),
    /// The host socket could not be set up.
    #[error("Failed to listen on the vsock socket {0}")]
    Listen(String, #[source] std::io::Error),
}

/// A virtio-vsock device.
///
/// ```
/// use std::sync::Arc;
/// use devices::virtio::vsock::{VsockConfig, VsockDevice};
/// use devices::virtio::VirtioDevice;
/// use vm_memory::GuestMemoryMmap;
///
/// let socket = std::env::temp_dir().join(format!("vsock-doc-{}.sock", std::process::id()));
/// let vsock = VsockDevice::<Arc<GuestMemoryMmap>>::new(VsockConfig { cid: 3, socket }).unwrap();
/// let mut cid = [0u8; 8];
/// vsock.read_config(0, &mut cid);
/// assert_eq!(u64::from_le_bytes(cid), 3);
/// ```
pub struct VsockDevice<M: GuestAddressSpace> {
    pub(super) cid: u64,
    pub(super) muxer: Muxer,
    /// One packet, header and payload: reused, never reallocated.
    pub(super) scratch: Vec<u8>,
    pub(super) core: DeviceCore<M>,
    pub(super) metrics: Arc<VsockMetrics>,
}

impl<M: GuestAddressSpace> std::fmt::Debug for VsockDevice<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VsockDevice")
            .field("cid", &self.cid)
            .field("active", &self.core.is_activated())
            .finish_non_exhaustive()
    }
}

impl<M: GuestAddressSpace> VsockDevice<M> {
    /// A device for guest `cid`, listening on `socket` (which must not exist yet; it is
    /// removed when the device is dropped).
    pub fn new(config: VsockConfig) -> Result<Self, VsockError> {
        if config.cid < 3 || config.cid >= u64::from(u32::MAX) {
            return Err(VsockError::InvalidCid(config.cid));
        }
        let muxer = Muxer::new(config.cid, &config.socket)
            .map_err(|e| VsockError::Listen(config.socket.display().to_string(), e))?;
        Ok(VsockDevice {
            cid: config.cid,
            muxer,
            scratch: vec![0; HDR_LEN + MAX_PAYLOAD],
            // The configuration space is the guest CID.
            core: DeviceCore::new(
                "virtio-vsock",
                device_type::VSOCK,
                0,
                &[QUEUE_SIZE; 3],
                config.cid.to_le_bytes().to_vec(),
            ),
            metrics: Arc::new(VsockMetrics::default()),
        })
    }

    /// The device's counters.
    pub fn metrics(&self) -> Arc<VsockMetrics> {
        self.metrics.clone()
    }
}

impl<M> QueueDevice<M> for VsockDevice<M>
where
    M: GuestAddressSpace + Send + 'static,
{
    fn core(&self) -> &DeviceCore<M> {
        &self.core
    }

    fn core_mut(&mut self) -> &mut DeviceCore<M> {
        &mut self.core
    }

    fn resetting(&mut self) {
        // The guest's sockets are gone with its driver: so are the host streams.
        self.muxer.reset();
    }

    fn own_fds(&self) -> Vec<RawFd> {
        vec![self.muxer.epoll_fd()]
    }

    fn queue_notified(&mut self, index: usize) {
        match index {
            RX_QUEUE => self.process_rx(),
            TX_QUEUE => self.process_tx(),
            _ => {}
        }
    }

    fn fd_ready(&mut self, index: usize) {
        if index == 0 {
            self.muxer.handle_host_events();
            self.process_rx();
        }
    }
}
