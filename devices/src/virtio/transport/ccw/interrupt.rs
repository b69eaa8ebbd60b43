//! How a virtio-ccw device signals its driver (virtio 1.2 §4.3.3.2, §4.3.3.3):
//!
//! - Classic indicators: a 64-bit big-endian field in guest memory, bit `n` for queue
//!   `n`, plus a separate configuration-change indicator (bit 0); the subchannel becomes
//!   status pending with alert status and an I/O interruption is made pending.
//! - Adapter (thin) interrupts: bit `bit_nr + n` of an indicator bit string (bit 0 is
//!   the most significant bit of the first byte) and a summary indicator byte; an adapter
//!   interruption on the driver's ISC is made pending when the summary byte was clear.
//!   Configuration changes still use the classic configuration indicator.
//!
//! The bits are set with atomic ORs, indicator first and summary after it, so a driver
//! that clears the summary and then scans never misses a bit. The interruptions
//! themselves are the VMM's: [`IoInterruptSink`]. A sink may also take adapter
//! indicators over entirely ([`IoInterruptSink::route_adapter`]): on KVM on Z each queue
//! then gets an irqfd on a `KVM_IRQ_ROUTING_S390_ADAPTER` route, and the kernel sets the
//! indicator and summary bits and makes the adapter interruption pending itself.

use std::io;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use vm_memory::{GuestAddress, GuestAddressSpace, GuestMemory, Permissions, VolatileMemory};
use vmm_sys_util::eventfd::EventFd;

use super::command::ThinintArea;
use super::subchannel::{PendingInterrupt, Subchannel, SubchannelId};
use crate::virtio::interrupt::{VirtioInterrupt, VirtioInterruptType};
use crate::virtio::status;

/// Where the VMM makes I/O interruptions pending for the guest.
pub trait IoInterruptSink: Send + Sync {
    /// An I/O interruption for a subchannel.
    fn subchannel(&self, irq: PendingInterrupt) -> io::Result<()>;

    /// An adapter interruption on interruption subclass `isc`.
    fn adapter(&self, isc: u8) -> io::Result<()>;

    /// The driver of `subchannel` registered adapter indicators `area` for its `queues`
    /// queues. A sink that can signal them without the transport (KVM: an irqfd per
    /// queue on an S390 adapter route) returns one notifier per queue: writing the
    /// notifier of queue `n` must set indicator bit `area.bit_nr + n` (most significant
    /// bit first), then the summary byte, and make an adapter interruption on `area.isc`
    /// pending if the summary byte was clear. `None` (the default) leaves that to the
    /// transport, which then calls [`Self::adapter`].
    fn route_adapter(
        &self,
        _subchannel: SubchannelId,
        _area: &ThinintArea,
        _queues: usize,
    ) -> io::Result<Option<Vec<EventFd>>> {
        Ok(None)
    }

    /// The routes [`Self::route_adapter`] made for `subchannel` are no longer used (the
    /// device was reset).
    fn unroute_adapter(&self, _subchannel: SubchannelId) {}
}

/// Where a device's queue indicators are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QueueIndicators {
    /// None registered: queue interrupts are dropped (the driver polls or has not set
    /// up yet).
    #[default]
    None,
    /// `CCW_CMD_SET_IND`: the 64-bit classic indicators at this address.
    Classic(u64),
    /// `CCW_CMD_SET_IND_ADAPTER`: adapter interrupt indicators.
    Adapter(ThinintArea),
}

#[derive(Debug, Default)]
struct Indicators {
    queues: QueueIndicators,
    config: Option<u64>,
    /// One notifier per queue when the sink routes the adapter indicators.
    routed: Vec<EventFd>,
}

/// The virtio-ccw side of [`VirtioInterrupt`] for one device, and its status byte.
pub struct CcwInterrupt<M: GuestAddressSpace> {
    mem: M,
    subchannel: Arc<Mutex<Subchannel>>,
    sink: Arc<dyn IoInterruptSink>,
    indicators: Mutex<Indicators>,
    status: AtomicU8,
}

impl<M: GuestAddressSpace> std::fmt::Debug for CcwInterrupt<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CcwInterrupt")
            .field("indicators", &self.indicators)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

fn invalid<E: std::error::Error + Send + Sync + 'static>(e: E) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The data behind these locks stays consistent across a panic (plain values).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<M: GuestAddressSpace> CcwInterrupt<M> {
    /// The interrupt of the device behind `subchannel`.
    pub fn new(mem: M, subchannel: Arc<Mutex<Subchannel>>, sink: Arc<dyn IoInterruptSink>) -> Self {
        Self {
            mem,
            subchannel,
            sink,
            indicators: Mutex::new(Indicators::default()),
            status: AtomicU8::new(0),
        }
    }

    /// The device status byte.
    pub fn status(&self) -> u8 {
        self.status.load(Ordering::SeqCst)
    }

    /// Sets the device status byte.
    pub fn set_status(&self, value: u8) {
        self.status.store(value, Ordering::SeqCst);
    }

    /// The queue indicators.
    pub fn queue_indicators(&self) -> QueueIndicators {
        lock(&self.indicators).queues
    }

    /// Registers the queue indicators of a device with `count` queues. Adapter
    /// indicators are offered to the sink's [`IoInterruptSink::route_adapter`]; if it
    /// cannot route them, the transport signals them itself.
    pub fn set_queue_indicators(&self, queues: QueueIndicators, count: usize) {
        let routed = match &queues {
            QueueIndicators::Adapter(area) => {
                let id = lock(&self.subchannel).id();
                match self.sink.route_adapter(id, area, count) {
                    Ok(Some(notifiers)) if notifiers.len() == count => notifiers,
                    Ok(Some(_)) | Ok(None) => Vec::new(),
                    Err(e) => {
                        tracing::warn!(
                            "Cannot route adapter indicators, signalling them from the VMM: {e}"
                        );
                        Vec::new()
                    }
                }
            }
            _ => Vec::new(),
        };
        let mut i = lock(&self.indicators);
        i.queues = queues;
        i.routed = routed;
    }

    /// Registers the configuration-change indicator.
    pub fn set_config_indicator(&self, addr: u64) {
        lock(&self.indicators).config = Some(addr);
    }

    /// Whether the sink signals the adapter indicators (one notifier per queue).
    pub fn adapter_routed(&self) -> bool {
        !lock(&self.indicators).routed.is_empty()
    }

    /// Forgets the indicators and the status (a device reset).
    pub fn reset(&self) {
        let routed = std::mem::take(&mut *lock(&self.indicators)).routed;
        if !routed.is_empty() {
            self.sink.unroute_adapter(lock(&self.subchannel).id());
        }
        self.set_status(0);
    }

    /// ORs `mask` into the guest byte at `addr`; returns its old value.
    fn or_byte(&self, addr: u64, mask: u8) -> io::Result<u8> {
        let mem = self.mem.memory();
        let slice = mem
            .get_slices(GuestAddress(addr), 1, Permissions::ReadWrite)
            .map_err(invalid)?
            .next()
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?
            .map_err(invalid)?;
        let byte = slice.get_atomic_ref::<AtomicU8>(0).map_err(invalid)?;
        Ok(byte.fetch_or(mask, Ordering::SeqCst))
    }

    /// Bit `bit` (0 = least significant) of the big-endian doubleword at `addr`.
    fn set_classic_bit(&self, addr: u64, bit: u16) -> io::Result<()> {
        if bit >= 64 {
            return Ok(());
        }
        let byte = addr
            .checked_add(7 - u64::from(bit / 8))
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        self.or_byte(byte, 1 << (bit % 8)).map(drop)
    }

    fn alert(&self) -> io::Result<()> {
        let irq = lock(&self.subchannel).alert();
        match irq {
            Some(irq) => self.sink.subchannel(irq),
            None => Ok(()),
        }
    }
}

impl<M: GuestAddressSpace + Send + Sync> VirtioInterrupt for CcwInterrupt<M> {
    fn trigger(&self, kind: VirtioInterruptType) -> io::Result<()> {
        let indicators = {
            let i = lock(&self.indicators);
            if let (VirtioInterruptType::Queue(n), QueueIndicators::Adapter(_)) = (kind, i.queues) {
                if let Some(notifier) = i.routed.get(usize::from(n)) {
                    return notifier.write(1);
                }
            }
            (i.queues, i.config)
        };
        match (kind, indicators) {
            (VirtioInterruptType::Queue(n), (QueueIndicators::Adapter(a), _)) => {
                let bit = a
                    .bit_nr
                    .checked_add(u64::from(n))
                    .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
                let byte = a
                    .indicator
                    .checked_add(bit / 8)
                    .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
                self.or_byte(byte, 0x80 >> (bit % 8))?;
                if self.or_byte(a.summary_indicator, 0x01)? == 0 {
                    self.sink.adapter(a.isc)?;
                }
                Ok(())
            }
            (VirtioInterruptType::Queue(n), (QueueIndicators::Classic(addr), _)) => {
                self.set_classic_bit(addr, n)?;
                self.alert()
            }
            (VirtioInterruptType::Queue(_), (QueueIndicators::None, _)) => Ok(()),
            (VirtioInterruptType::Config, (_, Some(addr))) => {
                self.set_classic_bit(addr, 0)?;
                self.alert()
            }
            (VirtioInterruptType::Config, (_, None)) => Ok(()),
        }
    }

    fn set_needs_reset(&self) {
        self.status
            .fetch_or(status::DEVICE_NEEDS_RESET, Ordering::SeqCst);
        if let Err(e) = self.trigger(VirtioInterruptType::Config) {
            tracing::debug!("Cannot signal DEVICE_NEEDS_RESET: {e}");
        }
    }
}

// Tests may unwrap: a failed unwrap is a failed test.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use crate::virtio::transport::ccw::subchannel::SubchannelId;
    use vm_memory::{Bytes, GuestMemoryMmap};

    /// Records the interruptions the transport asks for; with `route` set it also takes
    /// adapter indicators over as a VMM with irqfd routes does, keeping a second handle
    /// of each queue's notifier.
    #[derive(Default)]
    pub(crate) struct RecordingSink {
        pub(crate) subchannel: Mutex<Vec<PendingInterrupt>>,
        pub(crate) adapter: Mutex<Vec<u8>>,
        pub(crate) route: bool,
        pub(crate) routes: Mutex<Vec<(SubchannelId, ThinintArea, Vec<EventFd>)>>,
        pub(crate) unrouted: Mutex<Vec<SubchannelId>>,
    }

    impl IoInterruptSink for RecordingSink {
        fn subchannel(&self, irq: PendingInterrupt) -> io::Result<()> {
            self.subchannel.lock().unwrap().push(irq);
            Ok(())
        }
        fn adapter(&self, isc: u8) -> io::Result<()> {
            self.adapter.lock().unwrap().push(isc);
            Ok(())
        }
        fn route_adapter(
            &self,
            subchannel: SubchannelId,
            area: &ThinintArea,
            queues: usize,
        ) -> io::Result<Option<Vec<EventFd>>> {
            if !self.route {
                return Ok(None);
            }
            let notifiers: Vec<EventFd> = (0..queues)
                .map(|_| EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap())
                .collect();
            let kept = notifiers.iter().map(|e| e.try_clone().unwrap()).collect();
            self.routes.lock().unwrap().push((subchannel, *area, kept));
            Ok(Some(notifiers))
        }
        fn unroute_adapter(&self, subchannel: SubchannelId) {
            self.unrouted.lock().unwrap().push(subchannel);
        }
    }

    type Mem = Arc<GuestMemoryMmap>;

    fn setup() -> (
        Mem,
        Arc<Mutex<Subchannel>>,
        Arc<RecordingSink>,
        CcwInterrupt<Mem>,
    ) {
        let mem: Mem =
            Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap());
        let sub = Arc::new(Mutex::new(Subchannel::new(SubchannelId::new(0, 2), 2)));
        // Enable it with ISC 3 and intparm 0x1234 as the driver would.
        let mut schib = sub.lock().unwrap().store();
        schib[0..4].copy_from_slice(&0x1234u32.to_be_bytes());
        schib[4] = 0x18;
        schib[5] |= 0x80;
        assert_eq!(sub.lock().unwrap().modify(&schib).unwrap(), 0);
        let sink = Arc::new(RecordingSink::default());
        let irq = CcwInterrupt::new(mem.clone(), sub.clone(), sink.clone());
        (mem, sub, sink, irq)
    }

    #[test]
    fn classic_indicators_set_bits_and_alert_the_subchannel() {
        let (mem, sub, sink, irq) = setup();
        irq.set_queue_indicators(QueueIndicators::Classic(0x100), 16);
        irq.set_config_indicator(0x200);
        irq.trigger(VirtioInterruptType::Queue(1)).unwrap();
        irq.trigger(VirtioInterruptType::Queue(9)).unwrap();
        // Bits 1 and 9 of a big-endian doubleword.
        assert_eq!(
            mem.read_obj::<[u8; 8]>(GuestAddress(0x100)).unwrap(),
            [0, 0, 0, 0, 0, 0, 0x02, 0x02]
        );
        // One interruption: the second trigger found the subchannel status pending.
        assert_eq!(
            *sink.subchannel.lock().unwrap(),
            vec![PendingInterrupt {
                id: SubchannelId::new(0, 2),
                intparm: 0x1234,
                isc: 3
            }]
        );
        let (cc, irb) = sub.lock().unwrap().test();
        assert_eq!(cc, 0);
        assert_eq!(&irb[2..4], &[0x00, 0x11], "alert + status pending");
        irq.trigger(VirtioInterruptType::Config).unwrap();
        assert_eq!(mem.read_obj::<[u8; 8]>(GuestAddress(0x200)).unwrap()[7], 1);
        assert_eq!(sink.subchannel.lock().unwrap().len(), 2);
    }

    #[test]
    fn adapter_indicators_set_msb_first_bits_and_the_summary() {
        let (mem, _sub, sink, irq) = setup();
        irq.set_queue_indicators(
            QueueIndicators::Adapter(ThinintArea {
                summary_indicator: 0x300,
                indicator: 0x400,
                bit_nr: 10,
                isc: 6,
            }),
            4,
        );
        irq.trigger(VirtioInterruptType::Queue(0)).unwrap();
        irq.trigger(VirtioInterruptType::Queue(3)).unwrap();
        // Bits 10 and 13 counted from the most significant bit of byte 0x400.
        assert_eq!(
            mem.read_obj::<[u8; 2]>(GuestAddress(0x400)).unwrap(),
            [0x00, 0x24]
        );
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x300)).unwrap(), 1);
        assert_eq!(
            *sink.adapter.lock().unwrap(),
            vec![6],
            "one interruption until the driver clears the summary"
        );
        mem.write_obj(0u8, GuestAddress(0x300)).unwrap();
        irq.trigger(VirtioInterruptType::Queue(0)).unwrap();
        assert_eq!(*sink.adapter.lock().unwrap(), vec![6, 6]);
        assert!(sink.subchannel.lock().unwrap().is_empty());
    }

    #[test]
    fn needs_reset_and_unregistered_indicators() {
        let (_mem, _sub, sink, irq) = setup();
        irq.trigger(VirtioInterruptType::Queue(0)).unwrap();
        irq.set_needs_reset();
        assert_ne!(irq.status() & status::DEVICE_NEEDS_RESET, 0);
        assert!(sink.subchannel.lock().unwrap().is_empty());
        // An indicator outside guest memory is an error for the device, not the host.
        irq.set_queue_indicators(QueueIndicators::Classic(0xffff_0000), 1);
        assert!(irq.trigger(VirtioInterruptType::Queue(0)).is_err());
        irq.reset();
        assert_eq!(irq.queue_indicators(), QueueIndicators::None);
        assert_eq!(irq.status(), 0);
    }
}
