//! The virtio-net device: a receive and a transmit queue, the configured MAC, link
//! status, and checksum/TSO offloads negotiated with the driver and passed to the tap.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use virtio_bindings::virtio_net;
use vm_memory::GuestAddressSpace;

use super::backend::NetBackend;
use super::metrics::NetMetrics;
use super::tap::{TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6};
use crate::virtio::device::ActivateError;
use crate::virtio::device_type;
use crate::virtio::interrupt::VirtioInterruptType;
use crate::virtio::queue_device::{DeviceCore, QueueDevice};

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

/// Features offered besides the ring's: checksum offload and TSO both ways, MAC, link
/// status.
const OFFERED: u64 = bit(virtio_net::VIRTIO_NET_F_MAC)
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
    pub(super) core: DeviceCore<M>,
    pub(super) metrics: Arc<NetMetrics>,
}

impl<M: GuestAddressSpace> std::fmt::Debug for NetDevice<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetDevice")
            .field("id", &self.id)
            .field("backend", &self.backend)
            .field("active", &self.core.is_activated())
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
        // The MAC is read-only without VIRTIO_NET_F_CTRL_MAC_ADDR; so is the rest.
        NetDevice {
            id: config.id,
            backend: config.backend,
            core: DeviceCore::new(
                "virtio-net",
                device_type::NET,
                OFFERED,
                &[QUEUE_SIZE; 2],
                config_space.to_vec(),
            ),
            metrics: Arc::new(NetMetrics::default()),
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
        self.core.config_mut()[6..8].copy_from_slice(&status.to_le_bytes());
        if let Some(active) = self.core.state.active_mut() {
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

impl<M> QueueDevice<M> for NetDevice<M>
where
    M: GuestAddressSpace + Send + 'static,
{
    fn core(&self) -> &DeviceCore<M> {
        &self.core
    }

    fn core_mut(&mut self) -> &mut DeviceCore<M> {
        &mut self.core
    }

    fn activated(&mut self, acked_features: u64) -> Result<(), ActivateError> {
        self.backend
            .set_offload(tap_offloads(acked_features))
            .map_err(|e| ActivateError::Backend(std::io::Error::other(e)))?;
        // Frames may have queued up in the backend before the driver was ready.
        self.process_rx();
        Ok(())
    }

    // Frames are moved synchronously on the device thread: nothing is in flight at a
    // reset.

    fn own_fds(&self) -> Vec<RawFd> {
        vec![self.backend.as_raw_fd()]
    }

    fn queue_notified(&mut self, index: usize) {
        match index {
            RX_QUEUE => {
                self.metrics.rx_kicks.inc();
                self.process_rx();
            }
            TX_QUEUE => {
                self.metrics.tx_kicks.inc();
                self.process_tx();
            }
            _ => {}
        }
    }

    fn fd_ready(&mut self, index: usize) {
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
