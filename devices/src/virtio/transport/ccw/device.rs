//! A virtio device behind a virtio-ccw subchannel: the device-specific channel commands
//! of virtio 1.2 §4.3.2 over a [`VirtioDevice`](crate::virtio::VirtioDevice).
//!
//! The devices here are virtio 1.x only, so the driver must negotiate revision 1 or 2
//! with `CCW_CMD_SET_VIRTIO_REV` before anything else: every other command is rejected
//! until then, and revision 0 (legacy) is refused — what the specification asks of a
//! device without legacy support. Payload lengths are checked as the specification
//! gives them: a CCW count that differs is a program check unless the CCW suppresses
//! incorrect length (SLI), and a shorter one always is.

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddressSpace;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::command::*;
use super::interrupt::{CcwInterrupt, QueueIndicators};
use super::program::{CcwDevice, CommandError, Transfer};
use crate::virtio::interrupt::VirtioInterrupt;
use crate::virtio::transport::shared_device::{self, ActivationFailure, Offer, SharedVirtioDevice};
use crate::virtio::{features, status, LogLimiter};

/// The highest virtio-ccw revision offered (2 adds `CCW_CMD_READ_STATUS`).
pub const MAX_REVISION: u16 = 2;
/// The largest configuration space read or written in one command.
pub const MAX_CONFIG_SIZE: usize = 0x1000;

/// One virtio device on a virtio-ccw subchannel.
pub struct VirtioCcwDevice<M: GuestAddressSpace> {
    device: SharedVirtioDevice<M>,
    mem: M,
    device_type: u32,
    offered: u64,
    max_sizes: Vec<u16>,
    revision: Option<u16>,
    driver_features: u64,
    queues: Vec<Queue>,
    queue_events: Vec<EventFd>,
    interrupt: Arc<CcwInterrupt<M>>,
    log: LogLimiter,
}

impl<M: GuestAddressSpace> std::fmt::Debug for VirtioCcwDevice<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioCcwDevice")
            .field("device_type", &self.device_type)
            .field("revision", &self.revision)
            .field("status", &self.interrupt.status())
            .finish_non_exhaustive()
    }
}

/// Checks a CCW's count against a payload of `size` bytes.
fn payload(ccw: &Ccw1, size: usize) -> Result<(), CommandError> {
    let count = usize::from(ccw.count);
    if count < size || (ccw.flags & CCW_FLAG_SLI == 0 && count != size) {
        return Err(CommandError::ProgramCheck);
    }
    Ok(())
}

/// The length of a configuration space access: a program check above [`MAX_CONFIG_SIZE`].
fn config_len(data: &[u8]) -> Result<usize, CommandError> {
    if data.len() > MAX_CONFIG_SIZE {
        return Err(CommandError::ProgramCheck);
    }
    Ok(data.len())
}

impl<M> VirtioCcwDevice<M>
where
    M: GuestAddressSpace + Send + Sync + 'static,
{
    /// Puts `device` behind a subchannel whose interrupts go through `interrupt`, with
    /// one notification eventfd per queue.
    pub fn new(
        device: SharedVirtioDevice<M>,
        mem: M,
        interrupt: Arc<CcwInterrupt<M>>,
    ) -> std::io::Result<Self> {
        let Offer {
            device_type,
            max_sizes,
            features: offered,
        } = Offer::of(&device);
        let queues = Self::fresh_queues(&max_sizes);
        let queue_events = max_sizes
            .iter()
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<std::io::Result<_>>()?;
        Ok(Self {
            device,
            mem,
            device_type,
            offered,
            max_sizes,
            revision: None,
            driver_features: 0,
            queues,
            queue_events,
            interrupt,
            log: LogLimiter::default(),
        })
    }

    /// The queue notification eventfds, by queue index: the VMM registers them as
    /// virtio-ccw notify ioeventfds and its device thread polls them.
    pub fn queue_events(&self) -> &[EventFd] {
        &self.queue_events
    }

    fn notify_queue(&self, index: u64) -> bool {
        let evt = usize::try_from(index)
            .ok()
            .and_then(|i| self.queue_events.get(i));
        match evt {
            Some(evt) => {
                // A full counter already means "notified".
                let _ = evt.write(1);
                true
            }
            None => false,
        }
    }

    fn fresh_queues(max_sizes: &[u16]) -> Vec<Queue> {
        max_sizes
            .iter()
            // A size that is not a power of two up to 32768 is a device bug; such a
            // queue stays at the smallest size and is refused at activation.
            .map(|size| Queue::new(*size).or_else(|_| Queue::new(1)))
            .collect::<Result<Vec<_>, _>>()
            .expect("a queue of size 1 is always valid")
    }

    /// The device model.
    pub fn device(&self) -> SharedVirtioDevice<M> {
        self.device.clone()
    }

    /// How many queues the device has (valid notification indexes are below it).
    pub fn queue_count(&self) -> usize {
        self.max_sizes.len()
    }

    /// The negotiated revision, once `CCW_CMD_SET_VIRTIO_REV` succeeded.
    pub fn revision(&self) -> Option<u16> {
        self.revision
    }

    /// The device status byte.
    pub fn status(&self) -> u8 {
        self.interrupt.status()
    }

    fn reset(&mut self) {
        shared_device::lock(&self.device).reset();
        self.queues = Self::fresh_queues(&self.max_sizes);
        self.driver_features = 0;
        self.interrupt.reset();
    }

    fn refuse(&mut self, reason: &str) {
        // A guest can retry at will: rate-limited.
        if let Some(suppressed) = self.log.allow() {
            tracing::warn!(reason, suppressed, "virtio-ccw device activation refused");
        }
        self.interrupt.set_needs_reset();
    }

    fn activate(&mut self) {
        let interrupt: Arc<dyn VirtioInterrupt> = self.interrupt.clone();
        let result = shared_device::activate(
            &self.device,
            &self.mem,
            interrupt,
            &self.queues,
            self.driver_features,
        );
        match result {
            Ok(()) => {}
            Err(ActivationFailure::Queue { reason, .. }) => self.refuse(&reason),
            Err(ActivationFailure::Device(e)) => self.refuse(&e.to_string()),
        }
    }

    fn write_status(&mut self, value: u8) {
        let old = self.interrupt.status();
        if value == 0 {
            self.reset();
            return;
        }
        let mut value = value & !status::DEVICE_NEEDS_RESET | (old & status::DEVICE_NEEDS_RESET);
        // FEATURES_OK only sticks for a feature set the device can work with.
        if value & status::FEATURES_OK != 0
            && old & status::FEATURES_OK == 0
            && self.driver_features & features::VERSION_1 == 0
        {
            value &= !status::FEATURES_OK;
        }
        self.interrupt.set_status(value);
        let driver_ok = status::DRIVER_OK | status::FEATURES_OK;
        if value & driver_ok == driver_ok && old & status::DRIVER_OK == 0 {
            self.activate();
        }
    }

    fn set_vq(&mut self, info: &VqInfoBlock) -> Result<(), CommandError> {
        let index = usize::from(info.index);
        let max = *self
            .max_sizes
            .get(index)
            .ok_or(CommandError::ProgramCheck)?;
        let queue = self
            .queues
            .get_mut(index)
            .ok_or(CommandError::ProgramCheck)?;
        if info.desc == 0 {
            // Linux deletes a queue with a zero descriptor address.
            *queue = Queue::new(max).map_err(|_| CommandError::ProgramCheck)?;
            return Ok(());
        }
        if info.num == 0 || info.num > max || !info.num.is_power_of_two() {
            return Err(CommandError::ProgramCheck);
        }
        queue.set_size(info.num);
        queue.set_desc_table_address(Some(info.desc as u32), Some((info.desc >> 32) as u32));
        queue.set_avail_ring_address(Some(info.driver as u32), Some((info.driver >> 32) as u32));
        queue.set_used_ring_address(Some(info.device as u32), Some((info.device >> 32) as u32));
        queue.set_ready(true);
        Ok(())
    }
}

impl<M> CcwDevice for VirtioCcwDevice<M>
where
    M: GuestAddressSpace + Send + Sync + 'static,
{
    fn notify(&self, queue: u64) -> bool {
        self.notify_queue(queue)
    }

    fn sense_id(&self) -> [u8; 8] {
        // Device types are small numbers (< 64).
        sense_id(self.device_type as u8)
    }

    fn execute(&mut self, ccw: &Ccw1, data: &mut [u8]) -> Result<Transfer, CommandError> {
        let Some(revision) = self.revision else {
            if ccw.cmd != CCW_CMD_SET_VIRTIO_REV {
                return Err(CommandError::Reject);
            }
            payload(ccw, 4)?;
            let (revision, length) =
                decode_rev_info(data).map_err(|_| CommandError::ProgramCheck)?;
            payload(ccw, 4 + usize::from(length))?;
            if revision == 0 || revision > MAX_REVISION {
                return Err(CommandError::Reject);
            }
            self.revision = Some(revision);
            return Ok(Transfer::FromGuest(4 + usize::from(length)));
        };
        match ccw.cmd {
            // Renegotiation is not allowed.
            CCW_CMD_SET_VIRTIO_REV => Err(CommandError::Reject),
            CCW_CMD_READ_FEAT => {
                payload(ccw, FeatureDesc::SIZE)?;
                let index = data[4];
                let desc = FeatureDesc::from_features(self.offered, index);
                data[..FeatureDesc::SIZE].copy_from_slice(&desc.encode());
                Ok(Transfer::ToGuest(FeatureDesc::SIZE))
            }
            CCW_CMD_WRITE_FEAT => {
                payload(ccw, FeatureDesc::SIZE)?;
                let desc = FeatureDesc::decode(data).map_err(|_| CommandError::ProgramCheck)?;
                // Features are fixed once FEATURES_OK is set; bits the device does not
                // offer are not accepted.
                if self.interrupt.status() & status::FEATURES_OK == 0 {
                    let bits = u64::from(desc.features);
                    match desc.index {
                        0 => {
                            self.driver_features =
                                (self.driver_features & !0xffff_ffff) | (bits & self.offered)
                        }
                        1 => {
                            self.driver_features =
                                (self.driver_features & 0xffff_ffff) | ((bits << 32) & self.offered)
                        }
                        _ => {}
                    }
                }
                Ok(Transfer::FromGuest(FeatureDesc::SIZE))
            }
            CCW_CMD_READ_CONF => {
                let n = config_len(data)?;
                shared_device::lock(&self.device).read_config(0, data);
                Ok(Transfer::ToGuest(n))
            }
            CCW_CMD_WRITE_CONF => {
                let n = config_len(data)?;
                shared_device::lock(&self.device).write_config(0, data);
                Ok(Transfer::FromGuest(n))
            }
            CCW_CMD_WRITE_STATUS => {
                payload(ccw, 1)?;
                self.write_status(data[0]);
                Ok(Transfer::FromGuest(1))
            }
            CCW_CMD_READ_STATUS if revision >= 2 => {
                payload(ccw, 1)?;
                data[0] = self.interrupt.status();
                Ok(Transfer::ToGuest(1))
            }
            CCW_CMD_VDEV_RESET => {
                self.reset();
                Ok(Transfer::None)
            }
            CCW_CMD_SET_VQ => {
                payload(ccw, VqInfoBlock::SIZE)?;
                let info = VqInfoBlock::decode(data).map_err(|_| CommandError::ProgramCheck)?;
                if self.interrupt.status() & status::DRIVER_OK != 0 {
                    return Err(CommandError::Reject);
                }
                self.set_vq(&info)?;
                Ok(Transfer::FromGuest(VqInfoBlock::SIZE))
            }
            CCW_CMD_READ_VQ_CONF => {
                payload(ccw, 4)?;
                let index = usize::from(be16(data, 0));
                let max = self.max_sizes.get(index).copied().unwrap_or(0);
                data[2..4].copy_from_slice(&max.to_be_bytes());
                Ok(Transfer::ToGuest(4))
            }
            CCW_CMD_SET_IND => {
                payload(ccw, 8)?;
                if let QueueIndicators::Adapter(_) = self.interrupt.queue_indicators() {
                    return Err(CommandError::Reject);
                }
                self.interrupt.set_queue_indicators(
                    QueueIndicators::Classic(be64(data, 0)),
                    self.queue_count(),
                );
                Ok(Transfer::FromGuest(8))
            }
            CCW_CMD_SET_CONF_IND => {
                payload(ccw, 8)?;
                self.interrupt.set_config_indicator(be64(data, 0));
                Ok(Transfer::FromGuest(8))
            }
            CCW_CMD_SET_IND_ADAPTER => {
                payload(ccw, ThinintArea::SIZE)?;
                if let QueueIndicators::Classic(_) = self.interrupt.queue_indicators() {
                    return Err(CommandError::Reject);
                }
                let area = ThinintArea::decode(data).map_err(|_| CommandError::ProgramCheck)?;
                if area.isc > 7 {
                    return Err(CommandError::ProgramCheck);
                }
                self.interrupt
                    .set_queue_indicators(QueueIndicators::Adapter(area), self.queue_count());
                Ok(Transfer::FromGuest(ThinintArea::SIZE))
            }
            _ => Err(CommandError::Reject),
        }
    }
}
