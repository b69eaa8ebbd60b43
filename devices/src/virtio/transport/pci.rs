//! Modern (virtio 1.x) virtio-pci: a PCI function exposing one 64-bit memory BAR with the
//! common configuration, ISR, device configuration and notification structures, plus the
//! MSI-X table and PBA, each described by a vendor capability.
//!
//! BAR 0 layout:
//!
//! | offset | region |
//! | --- | --- |
//! | 0x0000 | common configuration ([`super::common_config`]) |
//! | 0x1000 | ISR status (read to clear) |
//! | 0x2000 | device-specific configuration |
//! | 0x3000 | notifications: queue `n` at `0x3000 + 4 n` (notify_off_multiplier 4) |
//! | 0x8000 | MSI-X table |
//! | 0xc000 | MSI-X PBA |
//!
//! The VMM registers each queue's [`VirtioPciDevice::queue_events`] eventfd as a KVM
//! ioeventfd at [`VirtioPciDevice::notify_address`], so a kick never exits to userspace;
//! a notification that does reach [`PciDevice::write_bar`] signals the same eventfd.

use std::sync::{Arc, Mutex};

use thiserror::Error;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddressSpace;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::common_config::{CommonConfig, CommonConfigAction, COMMON_CONFIG_SIZE};
use super::pci_interrupt::PciInterrupt;
use super::shared_device::{self, ActivationFailure, Offer, SharedVirtioDevice};
use crate::pci::{
    Bar, BarKind, BarMove, MsiNotifier, MsixConfig, MsixError, PciClass, PciConfigError,
    PciConfiguration, PciDevice, PciIdentity,
};
use crate::virtio::interrupt::VirtioInterrupt;
use crate::virtio::{device_type, LogLimiter};

/// PCI vendor ID of virtio devices.
pub const VIRTIO_PCI_VENDOR_ID: u16 = 0x1af4;
/// Modern device IDs are 0x1040 + the virtio device type.
pub const VIRTIO_PCI_DEVICE_ID_BASE: u16 = 0x1040;
/// Size of BAR 0.
pub const BAR_SIZE: u64 = 0x1_0000;
/// Offset of the common configuration in BAR 0.
pub const COMMON_CONFIG_OFFSET: u64 = 0x0000;
/// Offset of the ISR status in BAR 0.
pub const ISR_OFFSET: u64 = 0x1000;
/// Offset of the device configuration in BAR 0.
pub const DEVICE_CONFIG_OFFSET: u64 = 0x2000;
/// Offset of the notification area in BAR 0.
pub const NOTIFY_OFFSET: u64 = 0x3000;
/// Bytes between the notification addresses of consecutive queues.
pub const NOTIFY_OFF_MULTIPLIER: u32 = 4;
/// Offset of the MSI-X table in BAR 0.
pub const MSIX_TABLE_OFFSET: u64 = 0x8000;
/// Offset of the MSI-X PBA in BAR 0.
pub const MSIX_PBA_OFFSET: u64 = 0xc000;
const REGION_SIZE: u64 = 0x1000;
/// Queues that fit the notification area and the MSI-X table (one vector per queue plus
/// one for configuration changes).
pub const MAX_QUEUES: usize = 1023;

const CAP_VENDOR: u8 = 0x09;
const CFG_TYPE_COMMON: u8 = 1;
const CFG_TYPE_NOTIFY: u8 = 2;
const CFG_TYPE_ISR: u8 = 3;
const CFG_TYPE_DEVICE: u8 = 4;
const CFG_TYPE_PCI: u8 = 5;
const VIRTIO_CAP_LEN: usize = 16;
const VIRTIO_CAP_EXT_LEN: usize = 20;

/// Errors creating a virtio-pci function.
#[derive(Debug, Error)]
pub enum VirtioPciError {
    /// The device has no queues, or more than [`MAX_QUEUES`].
    #[error("Unsupported number of queues {0}")]
    QueueCount(usize),
    /// A queue's maximum size is not a power of two up to 32768.
    #[error("Invalid queue size")]
    QueueSize(#[source] virtio_queue::Error),
    /// Building the configuration space failed.
    #[error("Failed to build the PCI configuration space")]
    Config(#[from] PciConfigError),
    /// Building the MSI-X table failed.
    #[error("Failed to set up MSI-X")]
    Msix(#[from] MsixError),
    /// Creating a queue eventfd failed.
    #[error("Failed to create a queue eventfd")]
    EventFd(#[source] std::io::Error),
}

/// A virtio device behind a modern virtio-pci function.
pub struct VirtioPciDevice<M: GuestAddressSpace> {
    config: PciConfiguration,
    common: CommonConfig,
    device: SharedVirtioDevice<M>,
    mem: M,
    interrupt: Arc<PciInterrupt>,
    msix: Arc<Mutex<MsixConfig>>,
    msix_cap_register: usize,
    pci_cfg_cap_offset: usize,
    queue_events: Vec<EventFd>,
    log: LogLimiter,
}

impl<M: GuestAddressSpace> std::fmt::Debug for VirtioPciDevice<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioPciDevice")
            .field("config", &self.config)
            .field("status", &self.interrupt.status())
            .finish_non_exhaustive()
    }
}

fn class_of(device_type: u32) -> PciClass {
    match device_type {
        device_type::NET => PciClass::Network,
        device_type::BLOCK => PciClass::MassStorage,
        device_type::CONSOLE | device_type::VSOCK => PciClass::Communication,
        _ => PciClass::Other,
    }
}

/// A `struct virtio_pci_cap` (plus `extra`) and its write mask.
fn virtio_cap(cfg_type: u8, offset: u64, length: u64, extra: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let len = VIRTIO_CAP_LEN + extra.len();
    let mut data = vec![0u8; len];
    data[0] = CAP_VENDOR;
    data[2] = len as u8;
    data[3] = cfg_type;
    data[4] = 0; // BAR 0
    data[8..12].copy_from_slice(&(offset as u32).to_le_bytes());
    data[12..16].copy_from_slice(&(length as u32).to_le_bytes());
    data[16..].copy_from_slice(extra);
    (data, vec![0u8; len])
}

impl<M> VirtioPciDevice<M>
where
    M: GuestAddressSpace + Send + 'static,
{
    /// Puts `device` behind a virtio-pci function whose BAR 0 is at `bar_address`
    /// (allocated by the VMM from a [`crate::pci::BarAllocator`], aligned to [`BAR_SIZE`]),
    /// delivering MSI-X vectors through `msi`.
    pub fn new(
        device: SharedVirtioDevice<M>,
        mem: M,
        msi: Arc<dyn MsiNotifier>,
        bar_address: u64,
    ) -> Result<Self, VirtioPciError> {
        let Offer {
            device_type,
            max_sizes,
            features: offered,
        } = Offer::of(&device);
        let num_queues = max_sizes.len();
        if num_queues == 0 || num_queues > MAX_QUEUES {
            return Err(VirtioPciError::QueueCount(num_queues));
        }
        let queues = max_sizes
            .iter()
            .map(|size| Queue::new(*size))
            .collect::<Result<Vec<_>, _>>()
            .map_err(VirtioPciError::QueueSize)?;
        let queue_events = (0..num_queues)
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<Result<Vec<_>, _>>()
            .map_err(VirtioPciError::EventFd)?;

        // One vector per queue plus one for configuration changes; MAX_QUEUES keeps it
        // within the table area.
        let vectors = num_queues as u16 + 1;
        let msix = MsixConfig::new(vectors, msi)?;
        let mut config = PciConfiguration::new(PciIdentity {
            vendor_id: VIRTIO_PCI_VENDOR_ID,
            // Device types are small numbers (< 64); the sum cannot overflow.
            device_id: VIRTIO_PCI_DEVICE_ID_BASE + device_type as u16,
            revision: 1,
            class: class_of(device_type),
            subsystem_vendor_id: VIRTIO_PCI_VENDOR_ID,
            // >= 0x40 marks a modern-only device.
            subsystem_id: 0x40,
        });
        config.add_bar(
            0,
            Bar {
                kind: BarKind::Memory64,
                size: BAR_SIZE,
                prefetchable: false,
            },
            bar_address,
        )?;
        let (cap, mask) = msix.capability(0, MSIX_TABLE_OFFSET as u32, 0, MSIX_PBA_OFFSET as u32);
        let msix_cap_offset = config.add_capability(&cap, &mask)?;
        for (cfg_type, offset, length) in [
            (CFG_TYPE_COMMON, COMMON_CONFIG_OFFSET, COMMON_CONFIG_SIZE),
            (CFG_TYPE_ISR, ISR_OFFSET, 1),
            (CFG_TYPE_DEVICE, DEVICE_CONFIG_OFFSET, REGION_SIZE),
        ] {
            let (cap, mask) = virtio_cap(cfg_type, offset, length, &[]);
            config.add_capability(&cap, &mask)?;
        }
        let (cap, mask) = virtio_cap(
            CFG_TYPE_NOTIFY,
            NOTIFY_OFFSET,
            num_queues as u64 * u64::from(NOTIFY_OFF_MULTIPLIER),
            &NOTIFY_OFF_MULTIPLIER.to_le_bytes(),
        );
        config.add_capability(&cap, &mask)?;
        // VIRTIO_PCI_CAP_PCI_CFG: a window into the BARs through configuration space.
        let (cap, mut mask) = virtio_cap(CFG_TYPE_PCI, 0, 0, &[0; 4]);
        mask[4] = 0xff; // bar
        mask[8..VIRTIO_CAP_EXT_LEN].fill(0xff); // offset, length, pci_cfg_data
        let pci_cfg_cap_offset = config.add_capability(&cap, &mask)?;

        let msix = Arc::new(Mutex::new(msix));
        let interrupt = Arc::new(PciInterrupt::new(num_queues, msix.clone()));
        let common = CommonConfig::new(offered, queues, vectors, interrupt.clone());
        Ok(VirtioPciDevice {
            config,
            common,
            device,
            mem,
            interrupt,
            msix,
            msix_cap_register: msix_cap_offset / 4,
            pci_cfg_cap_offset,
            queue_events,
            log: LogLimiter::default(),
        })
    }

    /// The device model behind this function.
    pub fn device(&self) -> SharedVirtioDevice<M> {
        self.device.clone()
    }

    /// The eventfd of each queue, signalled on a driver notification.
    pub fn queue_events(&self) -> &[EventFd] {
        &self.queue_events
    }

    /// The guest address the driver writes to notify queue `index`, with BAR 0 where it
    /// currently is.
    pub fn notify_address(&self, index: usize) -> u64 {
        self.config.bar_address(0) + NOTIFY_OFFSET + index as u64 * u64::from(NOTIFY_OFF_MULTIPLIER)
    }

    /// The device status byte.
    pub fn status(&self) -> u8 {
        self.interrupt.status()
    }

    fn activate(&mut self) {
        let interrupt: Arc<dyn VirtioInterrupt> = self.interrupt.clone();
        let acked = self.common.driver_features();
        match shared_device::activate(
            &self.device,
            &self.mem,
            interrupt,
            self.common.queues(),
            acked,
        ) {
            Ok(()) => {}
            Err(ActivationFailure::Queue { index, reason }) => self.fail_activation(index, &reason),
            Err(ActivationFailure::Device(e)) => {
                // A guest can retry activation at will: rate-limited.
                if let Some(suppressed) = self.log.allow() {
                    tracing::warn!(error = %e, suppressed, "Virtio device activation failed");
                }
                self.interrupt.set_needs_reset();
            }
        }
    }

    fn fail_activation(&mut self, index: usize, reason: &str) {
        if let Some(suppressed) = self.log.allow() {
            tracing::warn!(
                queue = index,
                reason,
                suppressed,
                "Refusing to activate virtio queue"
            );
        }
        self.interrupt.set_needs_reset();
    }

    fn reset(&mut self) {
        shared_device::lock(&self.device).reset();
        self.common.reset();
        self.interrupt.reset();
        for event in &self.queue_events {
            // Drop notifications the driver sent before the reset.
            let _ = event.read();
        }
    }

    fn read_region(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let region = offset & !(REGION_SIZE - 1);
        let inner = offset - region;
        match region {
            COMMON_CONFIG_OFFSET => self.common.read(inner, data),
            ISR_OFFSET if inner == 0 && data.len() == 1 => data[0] = self.interrupt.take_isr(),
            DEVICE_CONFIG_OFFSET => shared_device::lock(&self.device).read_config(inner, data),
            MSIX_TABLE_OFFSET..MSIX_PBA_OFFSET => self
                .msix
                .lock()
                .expect("MSI-X lock poisoned")
                .read_table(offset - MSIX_TABLE_OFFSET, data),
            MSIX_PBA_OFFSET => self
                .msix
                .lock()
                .expect("MSI-X lock poisoned")
                .read_pba(inner, data),
            _ => {}
        }
    }

    fn write_region(&mut self, offset: u64, data: &[u8]) {
        let region = offset & !(REGION_SIZE - 1);
        let inner = offset - region;
        match region {
            COMMON_CONFIG_OFFSET => match self.common.write(inner, data) {
                CommonConfigAction::None => {}
                CommonConfigAction::Reset => self.reset(),
                CommonConfigAction::Activate => self.activate(),
            },
            DEVICE_CONFIG_OFFSET => shared_device::lock(&self.device).write_config(inner, data),
            NOTIFY_OFFSET => {
                let index = (inner / u64::from(NOTIFY_OFF_MULTIPLIER)) as usize;
                if let Some(event) = self.queue_events.get(index) {
                    if let Err(e) = event.write(1) {
                        tracing::warn!(queue = index, error = %e, "Failed to signal queue eventfd");
                    }
                }
            }
            MSIX_TABLE_OFFSET..MSIX_PBA_OFFSET => self
                .msix
                .lock()
                .expect("MSI-X lock poisoned")
                .write_table(offset - MSIX_TABLE_OFFSET, data),
            // ISR and PBA are read-only.
            _ => {}
        }
    }

    /// Serves the VIRTIO_PCI_CAP_PCI_CFG window: `pci_cfg_data` accesses go to the BAR at
    /// the capability's offset, with its length.
    fn pci_cfg_window(&self) -> Option<(u64, usize)> {
        let mut cap = [0u8; VIRTIO_CAP_EXT_LEN];
        self.config.read_bytes(self.pci_cfg_cap_offset, &mut cap);
        let bar = cap[4];
        let offset = u64::from(u32::from_le_bytes([cap[8], cap[9], cap[10], cap[11]]));
        let length = u32::from_le_bytes([cap[12], cap[13], cap[14], cap[15]]) as usize;
        let valid = bar == 0
            && matches!(length, 1 | 2 | 4)
            && offset % length as u64 == 0
            && offset + length as u64 <= BAR_SIZE;
        valid.then_some((offset, length))
    }

    fn pci_cfg_data_register(&self) -> usize {
        (self.pci_cfg_cap_offset + VIRTIO_CAP_LEN) / 4
    }
}

impl<M> PciDevice for VirtioPciDevice<M>
where
    M: GuestAddressSpace + Send + 'static,
{
    fn configuration(&self) -> &PciConfiguration {
        &self.config
    }

    fn read_config_register(&mut self, index: usize) -> u32 {
        if index == self.pci_cfg_data_register() {
            let mut data = [0u8; 4];
            if let Some((offset, length)) = self.pci_cfg_window() {
                self.read_region(offset, &mut data[..length]);
            }
            return u32::from_le_bytes(data);
        }
        self.config.read_register(index)
    }

    fn write_config_register(&mut self, index: usize, offset: usize, data: &[u8]) -> Vec<BarMove> {
        let moves = self.config.write_register(index, offset, data);
        if index == self.msix_cap_register {
            let control = (self.config.read_register(index) >> 16) as u16;
            self.msix
                .lock()
                .expect("MSI-X lock poisoned")
                .set_message_control(control);
        } else if index == self.pci_cfg_data_register() {
            if let Some((bar_offset, length)) = self.pci_cfg_window() {
                let value = self.config.read_register(index).to_le_bytes();
                self.write_region(bar_offset, &value[..length]);
            }
        }
        moves
    }

    fn read_bar(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if bar != 0
            || offset
                .checked_add(data.len() as u64)
                .is_none_or(|e| e > BAR_SIZE)
        {
            return;
        }
        self.read_region(offset, data);
    }

    fn write_bar(&mut self, bar: usize, offset: u64, data: &[u8]) {
        if bar != 0
            || offset
                .checked_add(data.len() as u64)
                .is_none_or(|e| e > BAR_SIZE)
        {
            return;
        }
        self.write_region(offset, data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::msix::tests::RecordingNotifier;
    use crate::pci::{PciBus, PciConfigMmio};
    use crate::virtio::test_driver::RecordingDevice;
    use crate::virtio::transport::VIRTIO_MSI_NO_VECTOR;
    use crate::virtio::{features, status, VirtioDevice, VirtioInterruptType};
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    type Mem = Arc<GuestMemoryMmap>;
    const BAR: u64 = 0x1_0000_0000;

    struct Harness {
        pci: VirtioPciDevice<Mem>,
        device: Arc<Mutex<RecordingDevice>>,
        notifier: Arc<RecordingNotifier>,
    }

    fn harness() -> Harness {
        let mem: Mem =
            Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap());
        let device = Arc::new(Mutex::new(RecordingDevice::default()));
        let notifier = Arc::new(RecordingNotifier::default());
        let shared: SharedVirtioDevice<Mem> = device.clone();
        let pci = VirtioPciDevice::new(shared, mem, notifier.clone(), BAR).unwrap();
        Harness {
            pci,
            device,
            notifier,
        }
    }

    impl Harness {
        fn read(&mut self, offset: u64, len: usize) -> u64 {
            let mut data = [0u8; 8];
            self.pci.read_bar(0, offset, &mut data[..len]);
            u64::from_le_bytes(data)
        }
        fn write(&mut self, offset: u64, len: usize, value: u64) {
            self.pci.write_bar(0, offset, &value.to_le_bytes()[..len]);
        }
        fn status(&mut self) -> u8 {
            self.read(0x14, 1) as u8
        }
        /// The Linux driver's sequence up to FEATURES_OK.
        fn negotiate(&mut self) {
            self.write(0x14, 1, 1);
            self.write(0x14, 1, 3);
            self.write(0x00, 4, 1);
            let high = self.read(0x04, 4);
            self.write(0x08, 4, 1);
            self.write(0x0c, 4, high);
            self.write(0x00, 4, 0);
            let low = self.read(0x04, 4);
            self.write(0x08, 4, 0);
            self.write(0x0c, 4, low);
            self.write(0x14, 1, 0xb);
        }
        fn setup_queue(&mut self, index: u64, desc: u64) {
            self.write(0x16, 2, index);
            self.write(0x18, 2, 16);
            self.write(0x20, 4, desc);
            self.write(0x24, 4, 0);
            self.write(0x28, 4, desc + 0x1000);
            self.write(0x2c, 4, 0);
            self.write(0x30, 4, desc + 0x2000);
            self.write(0x34, 4, 0);
            self.write(0x1c, 2, 1);
        }
    }

    /// Walks the capability list: (offset, id, virtio cfg_type).
    fn capabilities(pci: &mut VirtioPciDevice<Mem>) -> Vec<(usize, u8, u8)> {
        let mut caps = Vec::new();
        let mut at = (pci.read_config_register(0x34 / 4) & 0xff) as usize;
        while at != 0 && caps.len() < 16 {
            let reg = pci.read_config_register(at / 4);
            let id = reg as u8;
            let cfg_type = (reg >> 24) as u8;
            caps.push((at, id, cfg_type));
            at = ((reg >> 8) & 0xff) as usize;
        }
        caps
    }

    #[test]
    fn identity_bar_and_capabilities() {
        let mut h = harness();
        assert_eq!(h.pci.read_config_register(0), 0x1042_1af4);
        assert_eq!(h.pci.read_config_register(11) >> 16, 0x40);
        // Status register announces the capability list.
        assert_ne!(h.pci.read_config_register(1) & (1 << 20), 0);
        let caps = capabilities(&mut h.pci);
        let ids: Vec<u8> = caps.iter().map(|c| c.1).collect();
        assert_eq!(ids, vec![0x11, 9, 9, 9, 9, 9]);
        let types: Vec<u8> = caps[1..].iter().map(|c| c.2).collect();
        assert_eq!(
            types,
            vec![
                CFG_TYPE_COMMON,
                CFG_TYPE_ISR,
                CFG_TYPE_DEVICE,
                CFG_TYPE_NOTIFY,
                CFG_TYPE_PCI
            ]
        );
        // The notify capability: offset, length and multiplier.
        let notify = caps[4].0 / 4;
        assert_eq!(h.pci.read_config_register(notify + 2), NOTIFY_OFFSET as u32);
        assert_eq!(h.pci.read_config_register(notify + 3), 8);
        assert_eq!(
            h.pci.read_config_register(notify + 4),
            NOTIFY_OFF_MULTIPLIER
        );
        // MSI-X: 3 vectors, table and PBA in BAR 0.
        let msix = caps[0].0 / 4;
        assert_eq!(h.pci.read_config_register(msix) >> 16, 2);
        assert_eq!(
            h.pci.read_config_register(msix + 1),
            MSIX_TABLE_OFFSET as u32
        );
        assert_eq!(h.pci.read_config_register(msix + 2), MSIX_PBA_OFFSET as u32);
        // BAR 0 sizing.
        h.pci.write_config_register(4, 0, &[0xff; 4]);
        h.pci.write_config_register(5, 0, &[0xff; 4]);
        assert_eq!(h.pci.read_config_register(4), !(BAR_SIZE as u32 - 1) | 0x4);
        assert_eq!(h.pci.read_config_register(5), 0xffff_ffff);
    }

    #[test]
    fn driver_initialisation_activates_the_device() {
        let mut h = harness();
        h.negotiate();
        assert_eq!(h.status(), 0xb);
        assert_eq!(h.read(0x12, 2), 2);
        h.setup_queue(0, 0x1_0000);
        h.write(0x14, 1, 0xf);
        assert_eq!(h.status(), 0xf);
        let (queues, ready, acked) = h.device.lock().unwrap().activated.clone().unwrap();
        assert_eq!(queues, 2);
        assert_eq!(ready, vec![true, false]);
        assert_eq!(acked, features::VERSION_1 | features::RING_EVENT_IDX);
        // Device config goes to the device.
        h.write(DEVICE_CONFIG_OFFSET + 4, 4, 0xabcd);
        assert_eq!(h.read(DEVICE_CONFIG_OFFSET + 4, 4), 0xabcd);
        // Reset.
        h.write(0x14, 1, 0);
        assert_eq!(h.status(), 0);
        assert_eq!(h.device.lock().unwrap().resets, 1);
        assert!(!h.device.lock().unwrap().is_activated());
        h.write(0x16, 2, 0);
        assert_eq!(h.read(0x1c, 2), 0);
        assert_eq!(h.read(0x18, 2), 64);
    }

    #[test]
    fn rings_outside_memory_need_reset() {
        let mut h = harness();
        h.negotiate();
        h.setup_queue(0, 0xff_f000);
        h.write(0x14, 1, 0xf);
        assert_ne!(h.status() & status::DEVICE_NEEDS_RESET, 0);
        assert!(!h.device.lock().unwrap().is_activated());
        // A reset clears it.
        h.write(0x14, 1, 0);
        assert_eq!(h.status(), 0);
    }

    #[test]
    fn notifications_signal_the_queue_eventfd() {
        let mut h = harness();
        assert_eq!(h.pci.notify_address(1), BAR + NOTIFY_OFFSET + 4);
        h.write(NOTIFY_OFFSET + 4, 2, 1);
        assert_eq!(h.pci.queue_events()[1].read().unwrap(), 1);
        assert!(h.pci.queue_events()[0].read().is_err());
        // A notification past the last queue is dropped.
        h.write(NOTIFY_OFFSET + 8, 2, 2);
    }

    #[test]
    fn msix_and_isr_delivery() {
        let mut h = harness();
        h.negotiate();
        h.setup_queue(0, 0x1_0000);
        // Vectors: config 0, queue 0 -> 1; vector 3 does not exist.
        h.write(0x10, 2, 0);
        h.write(0x16, 2, 0);
        h.write(0x1a, 2, 3);
        assert_eq!(h.read(0x1a, 2), u64::from(VIRTIO_MSI_NO_VECTOR));
        h.write(0x1a, 2, 1);
        h.write(0x14, 1, 0xf);
        // Enable MSI-X and unmask vector 1.
        let msix = capabilities(&mut h.pci)[0].0;
        h.pci.write_config_register(msix / 4, 3, &[0x80]);
        h.write(MSIX_TABLE_OFFSET + 16, 4, 0xfee0_0000);
        h.write(MSIX_TABLE_OFFSET + 16 + 8, 4, 0x41);
        h.write(MSIX_TABLE_OFFSET + 16 + 12, 4, 0);
        let interrupt = h.device.lock().unwrap().interrupt.clone().unwrap();
        interrupt.trigger(VirtioInterruptType::Queue(0)).unwrap();
        assert_eq!(*h.notifier.notified.lock().unwrap(), vec![1]);
        // Vector 0 (config) is still masked: pending, visible in the PBA.
        interrupt.trigger(VirtioInterruptType::Config).unwrap();
        assert_eq!(h.read(MSIX_PBA_OFFSET, 8), 1);
        assert_eq!(h.read(0x15, 1), 1);
        // ISR is read-to-clear.
        assert_eq!(h.read(ISR_OFFSET, 1), 3);
        assert_eq!(h.read(ISR_OFFSET, 1), 0);
        // DEVICE_NEEDS_RESET from the device.
        interrupt.set_needs_reset();
        assert_ne!(h.status() & status::DEVICE_NEEDS_RESET, 0);
    }

    #[test]
    fn pci_cfg_capability_window() {
        let mut h = harness();
        let cap = capabilities(&mut h.pci)[5].0;
        // bar 0, offset 0x12 (num_queues), length 2.
        h.pci.write_config_register(cap / 4 + 1, 0, &[0]);
        h.pci
            .write_config_register(cap / 4 + 2, 0, &0x12u32.to_le_bytes());
        h.pci
            .write_config_register(cap / 4 + 3, 0, &2u32.to_le_bytes());
        assert_eq!(h.pci.read_config_register(cap / 4 + 4), 2);
        // Writes go through too: device_status = ACKNOWLEDGE.
        h.pci
            .write_config_register(cap / 4 + 2, 0, &0x14u32.to_le_bytes());
        h.pci
            .write_config_register(cap / 4 + 3, 0, &1u32.to_le_bytes());
        h.pci.write_config_register(cap / 4 + 4, 0, &[1]);
        assert_eq!(h.status(), 1);
        // A misaligned window reads zero.
        h.pci
            .write_config_register(cap / 4 + 2, 0, &0x13u32.to_le_bytes());
        h.pci
            .write_config_register(cap / 4 + 3, 0, &2u32.to_le_bytes());
        assert_eq!(h.pci.read_config_register(cap / 4 + 4), 0);
    }

    #[test]
    fn through_the_bus_and_ecam() {
        let h = harness();
        let mut bus = PciBus::new();
        let slot = bus.add_device(Arc::new(Mutex::new(h.pci))).unwrap();
        let ecam = PciConfigMmio::new(Arc::new(bus));
        let at = |reg: u64| u64::from(slot) << 15 | reg;
        let mut id = [0u8; 4];
        ecam.read(at(0), &mut id);
        assert_eq!(u32::from_le_bytes(id), 0x1042_1af4);
        // Class: mass storage.
        let mut class = [0u8; 1];
        ecam.read(at(0xb), &mut class);
        assert_eq!(class[0], 0x01);
    }

    #[test]
    fn out_of_bar_accesses() {
        let mut h = harness();
        assert_eq!(h.read(BAR_SIZE - 2, 4), 0);
        h.write(BAR_SIZE - 2, 4, u64::MAX);
        let mut data = [0xaau8; 4];
        h.pci.read_bar(1, 0, &mut data);
        assert_eq!(data, [0; 4]);
        h.pci.read_bar(0, u64::MAX - 1, &mut data);
        assert_eq!(data, [0; 4]);
        // Odd-sized ISR and PBA accesses read zero / all-ones and change nothing.
        assert_eq!(h.read(ISR_OFFSET, 2), 0);
        assert_eq!(h.read(MSIX_PBA_OFFSET + 1, 1), 0xff);
    }
}
