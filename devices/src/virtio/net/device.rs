//! The virtio-net device: a receive and a transmit queue, the configured MAC, link
//! status, and checksum/TSO offloads negotiated with the driver and passed to the tap.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use virtio_bindings::virtio_net;
use vm_memory::GuestAddressSpace;

use super::backend::NetBackend;
use super::metrics::NetMetrics;
use super::tap::{TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6};
use crate::virtio::active_queues::ActiveQueues;
use crate::virtio::device::{ActivateError, Activation, DeviceState, VirtioDevice};
use crate::virtio::interrupt::VirtioInterruptType;
use crate::virtio::{device_type, features, LogLimiter};

/// Queue size offered to the driver.
pub const QUEUE_SIZE: u16 = 256;
/// Receive queue index.
pub const RX_QUEUE: usize = 0;
/// Transmit queue index.
pub const TX_QUEUE: usize = 1;
/// Size of the configuration structure: mac, status, max_virtqueue_pairs.
const CONFIG_SIZE: usize = 10;

const fn bit(b: u32) -> u64 {
    1 << b
}

/// Features offered: checksum offload and TSO both ways, MAC, link status.
const OFFERED: u64 = features::VERSION_1
    | features::RING_EVENT_IDX
    | features::RING_INDIRECT_DESC
    | bit(virtio_net::VIRTIO_NET_F_MAC)
    | bit(virtio_net::VIRTIO_NET_F_STATUS)
    | bit(virtio_net::VIRTIO_NET_F_CSUM)
    | bit(virtio_net::VIRTIO_NET_F_GUEST_CSUM)
    | bit(virtio_net::VIRTIO_NET_F_GUEST_TSO4)
    | bit(virtio_net::VIRTIO_NET_F_GUEST_TSO6)
    | bit(virtio_net::VIRTIO_NET_F_HOST_TSO4)
    | bit(virtio_net::VIRTIO_NET_F_HOST_TSO6);

/// How to build a network device.
#[derive(Debug)]
pub struct NetConfig {
    /// Name for logs (the KubeVirt interface name).
    pub id: String,
    /// The guest's MAC address.
    pub mac: [u8; 6],
    /// Where frames go.
    pub backend: NetBackend,
}

/// A virtio-net device.
///
/// ```
/// use std::os::fd::OwnedFd;
/// use std::os::unix::net::UnixDatagram;
/// use std::sync::Arc;
/// use devices::virtio::net::{NetBackend, NetConfig, NetDevice};
/// use devices::virtio::VirtioDevice;
/// use vm_memory::GuestMemoryMmap;
///
/// let (ours, _peer) = UnixDatagram::pair().unwrap();
/// ours.set_nonblocking(true).unwrap();
/// let net = NetDevice::<Arc<GuestMemoryMmap>>::new(NetConfig {
///     id: "default".into(),
///     mac: [0x52, 0x54, 0x00, 0x12, 0x34, 0x56],
///     backend: NetBackend::Datagram(OwnedFd::from(ours)),
/// });
/// let mut mac = [0u8; 6];
/// net.read_config(0, &mut mac);
/// assert_eq!(mac, [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
/// ```
pub struct NetDevice<M: GuestAddressSpace> {
    pub(super) id: String,
    pub(super) backend: NetBackend,
    config_space: [u8; CONFIG_SIZE],
    queue_sizes: [u16; 2],
    pub(super) state: DeviceState<ActiveQueues<M>>,
    pub(super) metrics: Arc<NetMetrics>,
    pub(super) log: LogLimiter,
}

impl<M: GuestAddressSpace> std::fmt::Debug for NetDevice<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetDevice")
            .field("id", &self.id)
            .field("backend", &self.backend)
            .field("active", &self.state.is_activated())
            .finish_non_exhaustive()
    }
}

impl<M: GuestAddressSpace> NetDevice<M> {
    /// A device with link up.
    pub fn new(config: NetConfig) -> Self {
        let mut config_space = [0u8; CONFIG_SIZE];
        config_space[..6].copy_from_slice(&config.mac);
        config_space[6..8]
            .copy_from_slice(&(virtio_net::VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        config_space[8..10].copy_from_slice(&1u16.to_le_bytes());
        NetDevice {
            id: config.id,
            backend: config.backend,
            config_space,
            queue_sizes: [QUEUE_SIZE; 2],
            state: DeviceState::Inactive,
            metrics: Arc::new(NetMetrics::default()),
            log: LogLimiter::default(),
        }
    }

    /// The device's counters.
    pub fn metrics(&self) -> Arc<NetMetrics> {
        self.metrics.clone()
    }

    /// Sets the link status the guest sees, with a configuration interrupt if active.
    pub fn set_link_up(&mut self, up: bool) {
        let status = if up {
            virtio_net::VIRTIO_NET_S_LINK_UP as u16
        } else {
            0
        };
        self.config_space[6..8].copy_from_slice(&status.to_le_bytes());
        if let Some(active) = self.state.active_mut() {
            if let Err(e) = active.interrupt.trigger(VirtioInterruptType::Config) {
                tracing::warn!(nic = %self.id, error = %e, "Failed to signal link change");
            }
        }
    }
}

/// The tap offloads matching what the driver accepts on receive.
fn tap_offloads(acked: u64) -> u32 {
    let mut flags = 0;
    if acked & bit(virtio_net::VIRTIO_NET_F_GUEST_CSUM) != 0 {
        flags |= TUN_F_CSUM;
        // Segmentation offload needs checksum offload.
        if acked & bit(virtio_net::VIRTIO_NET_F_GUEST_TSO4) != 0 {
            flags |= TUN_F_TSO4;
        }
        if acked & bit(virtio_net::VIRTIO_NET_F_GUEST_TSO6) != 0 {
            flags |= TUN_F_TSO6;
        }
    }
    flags
}

impl<M> VirtioDevice<M> for NetDevice<M>
where
    M: GuestAddressSpace + Send + 'static,
{
    fn device_type(&self) -> u32 {
        device_type::NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        OFFERED
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Ok(start) = usize::try_from(offset) else {
            return;
        };
        if let Some(src) = start
            .checked_add(data.len())
            .and_then(|end| self.config_space.get(start..end))
        {
            data.copy_from_slice(src);
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // The MAC is read-only without VIRTIO_NET_F_CTRL_MAC_ADDR; so is the rest.
        if let Some(suppressed) = self.log.allow() {
            tracing::debug!(nic = %self.id, offset, len = data.len(), suppressed, "Dropped virtio-net config write");
        }
    }

    fn activate(&mut self, activation: Activation<M>) -> Result<(), ActivateError> {
        let offloads = tap_offloads(activation.acked_features);
        self.state.activate(activation, 2, "virtio-net")?;
        if let Err(e) = self.backend.set_offload(offloads) {
            self.state = DeviceState::Inactive;
            return Err(ActivateError::Backend(std::io::Error::other(e)));
        }
        // Frames may have queued up in the backend before the driver was ready.
        self.process_rx();
        Ok(())
    }

    fn reset(&mut self) {
        // Frames are moved synchronously on the device thread: nothing is in flight.
        self.state = DeviceState::Inactive;
    }

    fn is_activated(&self) -> bool {
        self.state.is_activated()
    }

    fn event_fds(&self) -> Vec<RawFd> {
        vec![self.backend.as_raw_fd()]
    }

    fn process_queue(&mut self, index: usize) {
        match index {
            RX_QUEUE => self.process_rx(),
            TX_QUEUE => self.process_tx(),
            _ => {}
        }
    }

    fn process_event(&mut self, index: usize) {
        if index == 0 {
            self.process_rx();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offloads_follow_the_driver() {
        assert_eq!(tap_offloads(0), 0);
        let csum = bit(virtio_net::VIRTIO_NET_F_GUEST_CSUM);
        let tso4 = bit(virtio_net::VIRTIO_NET_F_GUEST_TSO4);
        let tso6 = bit(virtio_net::VIRTIO_NET_F_GUEST_TSO6);
        assert_eq!(tap_offloads(csum), TUN_F_CSUM);
        assert_eq!(tap_offloads(tso4 | tso6), 0);
        assert_eq!(
            tap_offloads(csum | tso4 | tso6),
            TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
        );
    }
}
