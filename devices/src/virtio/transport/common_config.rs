//! The virtio-pci common configuration structure (`struct virtio_pci_common_cfg`): feature
//! negotiation, the device status state machine, and per-queue set-up.
//!
//! | offset | field | width |
//! | --- | --- | --- |
//! | 0x00 | device_feature_select | 4 |
//! | 0x04 | device_feature (RO) | 4 |
//! | 0x08 | driver_feature_select | 4 |
//! | 0x0c | driver_feature | 4 |
//! | 0x10 | config_msix_vector | 2 |
//! | 0x12 | num_queues (RO) | 2 |
//! | 0x14 | device_status | 1 |
//! | 0x15 | config_generation (RO) | 1 |
//! | 0x16 | queue_select | 2 |
//! | 0x18 | queue_size | 2 |
//! | 0x1a | queue_msix_vector | 2 |
//! | 0x1c | queue_enable | 2 |
//! | 0x1e | queue_notify_off (RO) | 2 |
//! | 0x20 | queue_desc | 8 |
//! | 0x28 | queue_driver (avail) | 8 |
//! | 0x30 | queue_device (used) | 8 |
//!
//! Accesses must use the field's width (64-bit fields also as two 32-bit halves);
//! anything else reads as zero and is dropped on write.

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};

use super::pci_interrupt::{PciInterrupt, VIRTIO_MSI_NO_VECTOR};
use crate::virtio::{features, status, LogLimiter};

/// Size of the common configuration structure.
pub const COMMON_CONFIG_SIZE: u64 = 0x38;

/// What a write to the common configuration asks the transport to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommonConfigAction {
    /// Nothing beyond the register update.
    None,
    /// The driver wrote 0 to device_status: reset the device.
    Reset,
    /// The driver set DRIVER_OK: activate the device.
    Activate,
}

/// The registers of the common configuration and the queues being set up.
#[derive(Debug)]
pub struct CommonConfig {
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    queue_select: u16,
    offered_features: u64,
    msix_vectors: u16,
    queues: Vec<Queue>,
    interrupt: Arc<PciInterrupt>,
    log: LogLimiter,
}

impl CommonConfig {
    /// Common configuration for a device offering `offered_features`, with queues of the
    /// given maximum sizes and `msix_vectors` table entries.
    pub fn new(
        offered_features: u64,
        queues: Vec<Queue>,
        msix_vectors: u16,
        interrupt: Arc<PciInterrupt>,
    ) -> Self {
        CommonConfig {
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            queue_select: 0,
            offered_features,
            msix_vectors,
            queues,
            interrupt,
            log: LogLimiter::default(),
        }
    }

    /// The features the driver accepted.
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    /// The queues as the driver configured them.
    pub fn queues(&self) -> &[Queue] {
        &self.queues
    }

    /// Back to the reset state.
    pub fn reset(&mut self) {
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.driver_features = 0;
        self.queue_select = 0;
        for q in &mut self.queues {
            q.reset();
        }
    }

    fn selected_queue(&self) -> Option<&Queue> {
        self.queues.get(usize::from(self.queue_select))
    }

    /// Reads `data.len()` bytes at `offset`.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let value: u64 = match (offset, data.len()) {
            (0x00, 4) => u64::from(self.device_feature_select),
            (0x04, 4) => match self.device_feature_select {
                0 => self.offered_features & 0xffff_ffff,
                1 => self.offered_features >> 32,
                _ => 0,
            },
            (0x08, 4) => u64::from(self.driver_feature_select),
            (0x0c, 4) => match self.driver_feature_select {
                0 => self.driver_features & 0xffff_ffff,
                1 => self.driver_features >> 32,
                _ => 0,
            },
            (0x10, 2) => u64::from(self.interrupt.config_vector()),
            (0x12, 2) => self.queues.len() as u64,
            (0x14, 1) => u64::from(self.interrupt.status()),
            (0x15, 1) => u64::from(self.interrupt.config_generation()),
            (0x16, 2) => u64::from(self.queue_select),
            (0x18, 2) => self.selected_queue().map_or(0, |q| u64::from(q.size())),
            (0x1a, 2) => u64::from(self.interrupt.queue_vector(usize::from(self.queue_select))),
            (0x1c, 2) => self.selected_queue().map_or(0, |q| u64::from(q.ready())),
            // Each queue has its own notification address: notify_off = queue index.
            (0x1e, 2) => self
                .selected_queue()
                .map_or(0, |_| u64::from(self.queue_select)),
            (0x20..=0x37, _) => {
                let Some(q) = self.selected_queue() else {
                    return;
                };
                let base = offset & !7;
                let address = match base {
                    0x20 => q.desc_table(),
                    0x28 => q.avail_ring(),
                    _ => q.used_ring(),
                };
                match (offset - base, data.len()) {
                    (0, 8) => address,
                    (0, 4) => address & 0xffff_ffff,
                    (4, 4) => address >> 32,
                    _ => return,
                }
            }
            _ => return,
        };
        data.copy_from_slice(&value.to_le_bytes()[..data.len()]);
    }

    /// Writes `data` at `offset`; returns what the transport must do next.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> CommonConfigAction {
        let mut bytes = [0u8; 8];
        if data.len() > 8 {
            return CommonConfigAction::None;
        }
        bytes[..data.len()].copy_from_slice(data);
        let value = u64::from_le_bytes(bytes);
        match (offset, data.len()) {
            (0x00, 4) => self.device_feature_select = value as u32,
            (0x08, 4) => self.driver_feature_select = value as u32,
            (0x0c, 4) => self.write_driver_features(value as u32),
            (0x10, 2) => {
                let vector = self.checked_vector(value as u16);
                self.interrupt.set_config_vector(vector);
            }
            (0x14, 1) => return self.write_status(value as u8),
            (0x16, 2) => self.queue_select = value as u16,
            (0x18, 2) => self.with_configurable_queue(|q| q.set_size(value as u16)),
            (0x1a, 2) => {
                if self.selected_queue().is_some() {
                    let vector = self.checked_vector(value as u16);
                    self.interrupt
                        .set_queue_vector(usize::from(self.queue_select), vector);
                }
            }
            (0x1c, 2) => {
                // Writing 0 is forbidden to the driver (no VIRTIO_F_RING_RESET offered).
                if value == 1 {
                    self.with_configurable_queue(|q| q.set_ready(true));
                }
            }
            (0x20..=0x37, 4 | 8) => {
                let base = offset & !7;
                let (low, high) = match (offset - base, data.len()) {
                    (0, 8) => (Some(value as u32), Some((value >> 32) as u32)),
                    (0, 4) => (Some(value as u32), None),
                    (4, 4) => (None, Some(value as u32)),
                    _ => return CommonConfigAction::None,
                };
                self.with_configurable_queue(|q| match base {
                    0x20 => q.set_desc_table_address(low, high),
                    0x28 => q.set_avail_ring_address(low, high),
                    _ => q.set_used_ring_address(low, high),
                });
            }
            _ => {
                if let Some(suppressed) = self.log.allow() {
                    tracing::debug!(
                        offset,
                        len = data.len(),
                        suppressed,
                        "Dropped write to virtio common config"
                    );
                }
            }
        }
        CommonConfigAction::None
    }

    /// A vector the driver asks for, or NO_VECTOR if the table does not have it (the
    /// driver reads the register back to find out).
    fn checked_vector(&self, vector: u16) -> u16 {
        if vector < self.msix_vectors {
            vector
        } else {
            VIRTIO_MSI_NO_VECTOR
        }
    }

    /// Queue registers are writable only before DRIVER_OK and while the queue is disabled.
    fn with_configurable_queue(&mut self, f: impl FnOnce(&mut Queue)) {
        if self.interrupt.status() & status::DRIVER_OK != 0 {
            return;
        }
        if let Some(q) = self.queues.get_mut(usize::from(self.queue_select)) {
            if !q.ready() {
                f(q);
            }
        }
    }

    fn write_driver_features(&mut self, value: u32) {
        let status = self.interrupt.status();
        // Features are negotiated between DRIVER and FEATURES_OK.
        if status & status::DRIVER == 0 || status & status::FEATURES_OK != 0 {
            return;
        }
        match self.driver_feature_select {
            0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(value),
            1 => {
                self.driver_features = (self.driver_features & 0xffff_ffff) | u64::from(value) << 32
            }
            _ => {}
        }
    }

    fn write_status(&mut self, value: u8) -> CommonConfigAction {
        if value == 0 {
            return CommonConfigAction::Reset;
        }
        let old = self.interrupt.status();
        // DEVICE_NEEDS_RESET belongs to the device; the driver cannot set or clear it.
        let value = (value & !status::DEVICE_NEEDS_RESET) | (old & status::DEVICE_NEEDS_RESET);
        let added = value & !old;
        let valid = old & !value == 0
            && (value & status::DRIVER == 0 || value & status::ACKNOWLEDGE != 0)
            && (value & status::FEATURES_OK == 0 || value & status::DRIVER != 0)
            && (value & status::DRIVER_OK == 0 || value & status::FEATURES_OK != 0);
        if !valid {
            if let Some(suppressed) = self.log.allow() {
                tracing::warn!(old, value, suppressed, "Invalid virtio status transition");
            }
            return CommonConfigAction::None;
        }
        let mut value = value;
        if added & status::FEATURES_OK != 0 && !self.features_acceptable() {
            // The driver reads the status back and gives up.
            value &= !status::FEATURES_OK;
        }
        self.interrupt.set_status(value);
        if added & status::DRIVER_OK != 0 && value & status::FAILED == 0 {
            CommonConfigAction::Activate
        } else {
            CommonConfigAction::None
        }
    }

    fn features_acceptable(&self) -> bool {
        self.driver_features & !self.offered_features == 0
            && self.driver_features & features::VERSION_1 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::msix::tests::RecordingNotifier;
    use crate::pci::MsixConfig;
    use std::sync::Mutex;

    fn common() -> CommonConfig {
        let msix = Arc::new(Mutex::new(
            MsixConfig::new(3, Arc::new(RecordingNotifier::default())).unwrap(),
        ));
        let interrupt = Arc::new(PciInterrupt::new(2, msix));
        let queues = vec![Queue::new(256).unwrap(), Queue::new(128).unwrap()];
        CommonConfig::new(
            features::VERSION_1 | features::RING_EVENT_IDX,
            queues,
            3,
            interrupt,
        )
    }

    fn read(c: &CommonConfig, offset: u64, len: usize) -> u64 {
        let mut data = [0u8; 8];
        c.read(offset, &mut data[..len]);
        u64::from_le_bytes(data)
    }

    fn write(c: &mut CommonConfig, offset: u64, len: usize, value: u64) -> CommonConfigAction {
        c.write(offset, &value.to_le_bytes()[..len])
    }

    fn negotiate(c: &mut CommonConfig, features: u64) -> u64 {
        write(c, 0x14, 1, 1);
        write(c, 0x14, 1, 3);
        write(c, 0x08, 4, 0);
        write(c, 0x0c, 4, features & 0xffff_ffff);
        write(c, 0x08, 4, 1);
        write(c, 0x0c, 4, features >> 32);
        write(c, 0x14, 1, 0xb);
        read(c, 0x14, 1)
    }

    #[test]
    fn device_features_by_select() {
        let mut c = common();
        assert_eq!(read(&c, 0x04, 4), 1 << 29);
        write(&mut c, 0x00, 4, 1);
        assert_eq!(read(&c, 0x04, 4), 1);
        write(&mut c, 0x00, 4, 2);
        assert_eq!(read(&c, 0x04, 4), 0);
        assert_eq!(read(&c, 0x12, 2), 2);
    }

    #[test]
    fn features_ok_requires_version_1_and_a_subset() {
        let mut c = common();
        assert_eq!(negotiate(&mut c, features::RING_EVENT_IDX), 3);
        let mut c = common();
        assert_eq!(negotiate(&mut c, features::VERSION_1 | 1), 3);
        let mut c = common();
        assert_eq!(negotiate(&mut c, features::VERSION_1), 0xb);
        assert_eq!(c.driver_features(), features::VERSION_1);
        // Features are frozen after FEATURES_OK.
        write(&mut c, 0x08, 4, 0);
        write(&mut c, 0x0c, 4, 1 << 29);
        assert_eq!(c.driver_features(), features::VERSION_1);
    }

    #[test]
    fn status_transitions() {
        let mut c = common();
        // DRIVER without ACKNOWLEDGE, DRIVER_OK without FEATURES_OK: refused.
        write(&mut c, 0x14, 1, 2);
        assert_eq!(read(&c, 0x14, 1), 0);
        write(&mut c, 0x14, 1, 1);
        write(&mut c, 0x14, 1, 3);
        assert_eq!(write(&mut c, 0x14, 1, 7), CommonConfigAction::None);
        assert_eq!(read(&c, 0x14, 1), 3);
        // Clearing bits is refused.
        write(&mut c, 0x14, 1, 1);
        assert_eq!(read(&c, 0x14, 1), 3);
        assert_eq!(negotiate(&mut c, features::VERSION_1), 0xb);
        // The driver cannot set DEVICE_NEEDS_RESET.
        write(&mut c, 0x14, 1, 0x4b);
        assert_eq!(read(&c, 0x14, 1), 0xb);
        assert_eq!(write(&mut c, 0x14, 1, 0xf), CommonConfigAction::Activate);
        assert_eq!(write(&mut c, 0x14, 1, 0x8f), CommonConfigAction::None);
        assert_eq!(write(&mut c, 0x14, 1, 0), CommonConfigAction::Reset);
    }

    #[test]
    fn queue_setup() {
        let mut c = common();
        negotiate(&mut c, features::VERSION_1);
        write(&mut c, 0x16, 2, 1);
        assert_eq!(read(&c, 0x18, 2), 128);
        assert_eq!(read(&c, 0x1e, 2), 1);
        write(&mut c, 0x18, 2, 64);
        // Not a power of two: ignored.
        write(&mut c, 0x18, 2, 100);
        assert_eq!(read(&c, 0x18, 2), 64);
        write(&mut c, 0x20, 4, 0x1000);
        write(&mut c, 0x24, 4, 0x1);
        write(&mut c, 0x28, 8, 0x2000);
        write(&mut c, 0x30, 4, 0x3000);
        assert_eq!(read(&c, 0x20, 8), 0x1_0000_1000);
        assert_eq!(read(&c, 0x24, 4), 0x1);
        assert_eq!(read(&c, 0x28, 4), 0x2000);
        assert_eq!(read(&c, 0x30, 8), 0x3000);
        // Misaligned halves are dropped.
        write(&mut c, 0x22, 4, 0xdead);
        assert_eq!(read(&c, 0x20, 8), 0x1_0000_1000);
        write(&mut c, 0x1a, 2, 2);
        assert_eq!(read(&c, 0x1a, 2), 2);
        write(&mut c, 0x1a, 2, 3);
        assert_eq!(read(&c, 0x1a, 2), 0xffff);
        write(&mut c, 0x10, 2, 0);
        assert_eq!(read(&c, 0x10, 2), 0);
        write(&mut c, 0x1c, 2, 1);
        assert_eq!(read(&c, 0x1c, 2), 1);
        // Enabled queues are frozen.
        write(&mut c, 0x18, 2, 32);
        assert_eq!(read(&c, 0x18, 2), 64);
        // A selector past the last queue reads zeros and ignores writes.
        write(&mut c, 0x16, 2, 7);
        assert_eq!(read(&c, 0x18, 2), 0);
        write(&mut c, 0x1c, 2, 1);
        assert_eq!(read(&c, 0x1c, 2), 0);
        assert_eq!(read(&c, 0x1a, 2), 0xffff);
        c.reset();
        write(&mut c, 0x16, 2, 1);
        assert_eq!(read(&c, 0x18, 2), 128);
        assert_eq!(read(&c, 0x1c, 2), 0);
    }

    #[test]
    fn wrong_widths_read_zero() {
        let c = common();
        assert_eq!(read(&c, 0x04, 2), 0);
        assert_eq!(read(&c, 0x12, 4), 0);
        assert_eq!(read(&c, 0x38, 4), 0);
        assert_eq!(read(&c, 0x1000, 1), 0);
    }
}
