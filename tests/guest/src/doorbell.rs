//! A virtio-pci transport whose queue notification is one write to the queue's notification
//! address, found once when the queue is set up (what Linux's `vp_modern_map_vq_notify`
//! does), and the split ring's notification test as the virtio spec words it
//! ([`Doorbell::kick`]).
//!
//! Why: `virtio-drivers`' `PciTransport::notify` selects the queue and reads its
//! `queue_notify_off` in the common configuration on every notification (a "TODO: consider
//! caching" in 0.13) before the write that matters. Those two accesses are emulated by the
//! VMM in user space, so every request cost two exits to the VMM's vCPU thread besides the
//! notification itself, which KVM hands to the device as an ioeventfd without leaving the
//! kernel. And its `VirtQueue::should_notify` with EVENT_IDX tests
//! `avail_idx >= avail_event + 1`, which is true whenever the device has not caught up
//! (so a busy device is kicked for every request) and wrong across the index wrap; the
//! spec's `vring_need_event` kicks only when the device asked for exactly the requests
//! just published.
//!
//! Drivers that notify through [`Transport::notify`] (`VirtIOBlk`, `VirtIONetRaw`, which
//! call it whenever `should_notify` says so) get the same test: a set-up queue's `notify`
//! is [`Doorbell::kick`], which only ever drops notifications `should_notify` asked for,
//! never adds one (for one request added at a time, `vring_need_event` implies
//! `avail_idx >= avail_event + 1`). Whether EVENT_IDX is on is taken from the features the
//! driver writes (or [`Doorbell::set_event_idx`]).
//!
//! Everything else is passed to the wrapped transport unchanged.

use core::ptr::NonNull;
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction};
use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use virtio_drivers::{Error, PhysAddr};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// The vendor-specific PCI capability, which virtio's structures use.
const CAP_VENDOR: u8 = 0x09;
/// `cfg_type` of the common configuration and of the notification structure.
const CAP_COMMON: u8 = 1;
const CAP_NOTIFY: u8 = 2;
/// `queue_select` and `queue_notify_off` in the common configuration.
const QUEUE_SELECT: usize = 0x16;
const QUEUE_NOTIFY_OFF: usize = 0x1e;
/// The most queues a wrapped device may use here.
const MAX_QUEUES: usize = 4;

/// What the wrapper knows of one queue once it is set up.
#[derive(Clone, Copy)]
struct QueueInfo {
    /// Its notification address.
    doorbell: NonNull<u16>,
    /// The driver area (available ring) and device area (used ring), identity-mapped.
    avail: NonNull<u16>,
    used: NonNull<u16>,
    size: u16,
    /// The available index at the last [`Doorbell::kick`] decision.
    published: u16,
}

/// A wrapped virtio-pci transport (see the module documentation).
pub struct Doorbell<T> {
    inner: T,
    common: NonNull<u8>,
    notify_base: usize,
    multiplier: u32,
    event_idx: bool,
    queues: [Option<QueueInfo>; MAX_QUEUES],
}

/// The memory address BAR `bar` of `df` decodes (32- or 64-bit memory BARs).
fn bar_address<C: ConfigurationAccess>(cam: &C, df: DeviceFunction, bar: u8) -> Option<u64> {
    if bar > 5 {
        return None;
    }
    let reg = 0x10 + bar * 4;
    let low = cam.read_word(df, reg);
    if low & 1 != 0 {
        return None;
    }
    let mut address = u64::from(low & !0xf);
    if (low >> 1) & 3 == 2 && bar < 5 {
        address |= u64::from(cam.read_word(df, reg + 4)) << 32;
    }
    (address != 0).then_some(address)
}

impl<T: Transport> Doorbell<T> {
    /// Wraps `inner`, the transport of `df`, whose capabilities `cam` reads. `None` if the
    /// function lacks a common or notification structure in a memory BAR. The BARs must
    /// already be identity-mapped (the transport did so).
    pub fn new<C: ConfigurationAccess>(inner: T, cam: &C, df: DeviceFunction) -> Option<Self> {
        let (mut common, mut notify) = (None, None);
        let mut next = (cam.read_word(df, 0x34) & 0xfc) as u8;
        // The list is in the function's 256 bytes; a loop in it ends after 48 steps.
        for _ in 0..48 {
            if next == 0 {
                break;
            }
            let header = cam.read_word(df, next);
            if header as u8 == CAP_VENDOR {
                let cfg_type = (header >> 24) as u8;
                let bar = cam.read_word(df, next + 4) as u8;
                let offset = u64::from(cam.read_word(df, next + 8));
                let at = bar_address(cam, df, bar).map(|base| base + offset);
                match cfg_type {
                    CAP_COMMON if common.is_none() => common = at,
                    CAP_NOTIFY if notify.is_none() => {
                        notify = at.map(|a| (a, cam.read_word(df, next + 16)));
                    }
                    _ => {}
                }
            }
            next = ((header >> 8) & 0xfc) as u8;
        }
        let common = NonNull::new(common? as *mut u8)?;
        let (notify_base, multiplier) = notify?;
        Some(Doorbell {
            inner,
            common,
            notify_base: notify_base as usize,
            multiplier,
            event_idx: false,
            queues: [None; MAX_QUEUES],
        })
    }

    /// The wrapped transport.
    pub fn inner(&mut self) -> &mut T {
        &mut self.inner
    }

    /// Tells the transport whether VIRTIO_F_EVENT_IDX was negotiated (what [`Self::kick`]
    /// consults).
    pub fn set_event_idx(&mut self, on: bool) {
        self.event_idx = on;
    }

    /// Notifies `queue` if the device needs to hear about the requests published since the
    /// last call: with EVENT_IDX when the device's `avail_event` lies among them
    /// (`vring_need_event`), else unless the device set `VRING_USED_F_NO_NOTIFY`. Returns
    /// whether it notified.
    pub fn kick(&mut self, queue: u16) -> bool {
        let event_idx = self.event_idx;
        let Some(q) = self
            .queues
            .get_mut(usize::from(queue))
            .and_then(Option::as_mut)
        else {
            return false;
        };
        // The publishing store (the available index) must be visible before the device's
        // suppression fields are read: a full fence, as the spec's driver algorithm needs.
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        // SAFETY: the rings are identity-mapped DMA memory the driver set up with this
        // queue; avail->idx is the second u16 of the driver area, avail_event the u16 after
        // the used ring's `size` 8-byte elements, flags the used ring's first u16.
        let (new, need) = unsafe {
            let new = q.avail.as_ptr().add(1).read_volatile();
            let need = if event_idx {
                let event = q
                    .used
                    .as_ptr()
                    .add(2 + 4 * usize::from(q.size))
                    .read_volatile();
                new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(q.published)
            } else {
                q.used.as_ptr().read_volatile() & 1 == 0
            };
            (new, need)
        };
        q.published = new;
        if need {
            // SAFETY: the queue's notification address in the device's BAR (identity-mapped).
            unsafe { q.doorbell.as_ptr().write_volatile(queue) };
        }
        need
    }
}

impl<T: Transport> Transport for Doorbell<T> {
    fn device_type(&self) -> DeviceType {
        self.inner.device_type()
    }

    fn read_device_features(&mut self) -> u64 {
        self.inner.read_device_features()
    }

    fn write_driver_features(&mut self, driver_features: u64) {
        /// `VIRTIO_F_RING_EVENT_IDX`.
        const RING_EVENT_IDX: u64 = 1 << 29;
        self.event_idx = driver_features & RING_EVENT_IDX != 0;
        self.inner.write_driver_features(driver_features)
    }

    fn max_queue_size(&mut self, queue: u16) -> u32 {
        self.inner.max_queue_size(queue)
    }

    fn notify(&mut self, queue: u16) {
        if matches!(self.queues.get(usize::from(queue)), Some(Some(_))) {
            self.kick(queue);
        } else {
            self.inner.notify(queue);
        }
    }

    fn get_status(&self) -> DeviceStatus {
        self.inner.get_status()
    }

    fn set_status(&mut self, status: DeviceStatus) {
        self.inner.set_status(status)
    }

    fn set_guest_page_size(&mut self, guest_page_size: u32) {
        self.inner.set_guest_page_size(guest_page_size)
    }

    fn requires_legacy_layout(&self) -> bool {
        self.inner.requires_legacy_layout()
    }

    fn queue_set(
        &mut self,
        queue: u16,
        size: u32,
        descriptors: PhysAddr,
        driver_area: PhysAddr,
        device_area: PhysAddr,
    ) {
        self.inner
            .queue_set(queue, size, descriptors, driver_area, device_area);
        let Some(slot) = self.queues.get_mut(usize::from(queue)) else {
            return;
        };
        // SAFETY: the common configuration in the device's BAR (identity-mapped by the
        // transport); queue_select and queue_notify_off are 16-bit registers there.
        let notify_off = unsafe {
            let common = self.common.as_ptr();
            common.add(QUEUE_SELECT).cast::<u16>().write_volatile(queue);
            common.add(QUEUE_NOTIFY_OFF).cast::<u16>().read_volatile()
        };
        let doorbell = self.notify_base + usize::from(notify_off) * self.multiplier as usize;
        *slot = match (
            NonNull::new(doorbell as *mut u16),
            NonNull::new(driver_area as usize as *mut u16),
            NonNull::new(device_area as usize as *mut u16),
        ) {
            (Some(doorbell), Some(avail), Some(used)) => Some(QueueInfo {
                doorbell,
                avail,
                used,
                size: size as u16,
                published: 0,
            }),
            _ => None,
        };
    }

    fn queue_unset(&mut self, queue: u16) {
        if let Some(slot) = self.queues.get_mut(usize::from(queue)) {
            *slot = None;
        }
        self.inner.queue_unset(queue)
    }

    fn queue_used(&mut self, queue: u16) -> bool {
        self.inner.queue_used(queue)
    }

    fn ack_interrupt(&mut self) -> InterruptStatus {
        self.inner.ack_interrupt()
    }

    fn read_config_generation(&self) -> u32 {
        self.inner.read_config_generation()
    }

    fn read_config_space<V: FromBytes + IntoBytes>(&self, offset: usize) -> Result<V, Error> {
        self.inner.read_config_space(offset)
    }

    fn write_config_space<V: IntoBytes + Immutable>(
        &mut self,
        offset: usize,
        value: V,
    ) -> Result<(), Error> {
        self.inner.write_config_space(offset, value)
    }
}
