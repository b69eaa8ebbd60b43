//! The driver's side of a split virtqueue, for device unit tests: rings laid out as the
//! virtio spec says (descriptor table, available ring, used ring; little-endian on every
//! host), chains made available one by one, used entries read back, and an interrupt
//! sink that records what it got.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VRING_USED_F_NO_NOTIFY};
use virtio_queue::desc::split::{Descriptor, VirtqUsedElem};
use virtio_queue::desc::RawDescriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::device::{ActivateError, Activation, VirtioDevice};
use super::interrupt::{VirtioInterrupt, VirtioInterruptType};
use super::{device_type, features};

/// Guest memory size used by device tests.
pub(crate) const TEST_MEMORY: u64 = 0x40_0000;

/// Guest memory for a test.
pub(crate) fn test_memory() -> Arc<GuestMemoryMmap> {
    Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), TEST_MEMORY as usize)]).unwrap())
}

/// The driver's side of an activated device under test.
pub(crate) struct TestSetup {
    /// Guest memory ([`test_memory`]).
    pub(crate) mem: Arc<GuestMemoryMmap>,
    /// One driver per queue; queue `i`'s rings start at `0x1_0000 * i`.
    pub(crate) queues: Vec<TestDriver>,
    /// What the device signalled.
    pub(crate) interrupt: Arc<RecordingInterrupt>,
}

/// Activates `device` as a driver accepting only VERSION_1 would, with `count` queues of
/// `size` entries (EVENT_IDX on each if `event_idx`).
pub(crate) fn activate<D>(device: &mut D, count: usize, size: u16, event_idx: bool) -> TestSetup
where
    D: VirtioDevice<Arc<GuestMemoryMmap>>,
{
    let mem = test_memory();
    let queues: Vec<TestDriver> = (0..count)
        .map(|i| TestDriver::new(&mem, size, 0x1_0000 * i as u64))
        .collect();
    let interrupt = Arc::new(RecordingInterrupt::default());
    let irq: Arc<dyn VirtioInterrupt> = interrupt.clone();
    device
        .activate(Activation {
            mem: mem.clone(),
            interrupt: irq,
            queues: queues.iter().map(|q| q.queue(event_idx)).collect(),
            acked_features: features::VERSION_1,
        })
        .unwrap();
    TestSetup {
        mem,
        queues,
        interrupt,
    }
}

/// One queue, driver side.
pub(crate) struct TestDriver {
    mem: Arc<GuestMemoryMmap>,
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    submitted: u16,
    next_desc: u16,
}

impl TestDriver {
    /// A queue of `size` entries whose rings live at `base` (descriptors), `base + 0x1000`
    /// (available) and `base + 0x2000` (used).
    pub(crate) fn new(mem: &Arc<GuestMemoryMmap>, size: u16, base: u64) -> Self {
        TestDriver {
            mem: mem.clone(),
            size,
            desc: base,
            avail: base + 0x1000,
            used: base + 0x2000,
            submitted: 0,
            next_desc: 0,
        }
    }

    /// The device's `Queue` as the transport would hand it over.
    pub(crate) fn queue(&self, event_idx: bool) -> Queue {
        let mut q = Queue::new(self.size).unwrap();
        q.set_size(self.size);
        q.set_desc_table_address(Some(self.desc as u32), Some((self.desc >> 32) as u32));
        q.set_avail_ring_address(Some(self.avail as u32), Some((self.avail >> 32) as u32));
        q.set_used_ring_address(Some(self.used as u32), Some((self.used >> 32) as u32));
        q.set_ready(true);
        q.set_event_idx(event_idx);
        assert!(q.is_valid(&*self.mem));
        q
    }

    /// Makes a chain of (address, length, device-writable) buffers available; returns
    /// its head index.
    pub(crate) fn add_chain(&mut self, buffers: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_desc;
        for (i, (addr, len, write)) in buffers.iter().enumerate() {
            let index = self.next_desc;
            self.next_desc = (self.next_desc + 1) % self.size;
            let mut flags = if *write { VRING_DESC_F_WRITE as u16 } else { 0 };
            if i + 1 < buffers.len() {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            let desc = RawDescriptor::from(Descriptor::new(*addr, *len, flags, self.next_desc));
            self.mem
                .write_obj(desc, GuestAddress(self.desc + 16 * u64::from(index)))
                .unwrap();
        }
        self.publish(head);
        head
    }

    /// Puts `head` in the available ring.
    pub(crate) fn publish(&mut self, head: u16) {
        let slot = u64::from(self.submitted % self.size);
        self.mem
            .write_obj(head.to_le(), GuestAddress(self.avail + 4 + 2 * slot))
            .unwrap();
        self.submitted = self.submitted.wrapping_add(1);
        self.mem
            .write_obj(self.submitted.to_le(), GuestAddress(self.avail + 2))
            .unwrap();
    }

    /// The available ring's index: chains made available so far.
    pub(crate) fn avail_idx(&self) -> u16 {
        self.submitted
    }

    /// The used ring's index.
    pub(crate) fn used_idx(&self) -> u16 {
        u16::from_le(self.mem.read_obj(GuestAddress(self.used + 2)).unwrap())
    }

    /// Used entry `n` (counting from 0 over the queue's life): (head, length).
    pub(crate) fn used(&self, n: u16) -> (u32, u32) {
        let slot = u64::from(n % self.size);
        let e: VirtqUsedElem = self
            .mem
            .read_obj(GuestAddress(self.used + 4 + 8 * slot))
            .unwrap();
        (e.id(), e.len())
    }

    /// Whether a driver that made chains available from index `old` up to now must notify
    /// the device (virtio 1.x, "Driver notifications"): with EVENT_IDX, `vring_need_event`
    /// over the device's `avail_event`, else the used ring's NO_NOTIFY flag clear.
    pub(crate) fn kick_needed(&self, old: u16, event_idx: bool) -> bool {
        if event_idx {
            let event = u16::from_le(
                self.mem
                    .read_obj(GuestAddress(self.used + 4 + 8 * u64::from(self.size)))
                    .unwrap(),
            );
            self.submitted.wrapping_sub(event).wrapping_sub(1) < self.submitted.wrapping_sub(old)
        } else {
            let flags = u16::from_le(self.mem.read_obj(GuestAddress(self.used)).unwrap());
            flags & VRING_USED_F_NO_NOTIFY as u16 == 0
        }
    }

    /// Sets `used_event` (EVENT_IDX): interrupt once the used index passes `value`.
    pub(crate) fn set_used_event(&self, value: u16) {
        self.mem
            .write_obj(
                value.to_le(),
                GuestAddress(self.avail + 4 + 2 * u64::from(self.size)),
            )
            .unwrap();
    }
}

/// Records interrupts and DEVICE_NEEDS_RESET.
#[derive(Default)]
pub(crate) struct RecordingInterrupt {
    pub(crate) queues: Mutex<Vec<u16>>,
    pub(crate) config: Mutex<usize>,
    pub(crate) needs_reset: AtomicBool,
}

impl RecordingInterrupt {
    pub(crate) fn needs_reset(&self) -> bool {
        self.needs_reset.load(Ordering::SeqCst)
    }
}

impl VirtioInterrupt for RecordingInterrupt {
    fn trigger(&self, kind: VirtioInterruptType) -> std::io::Result<()> {
        match kind {
            VirtioInterruptType::Queue(q) => self.queues.lock().unwrap().push(q),
            VirtioInterruptType::Config => *self.config.lock().unwrap() += 1,
        }
        Ok(())
    }

    fn set_needs_reset(&self) {
        self.needs_reset.store(true, Ordering::SeqCst);
    }
}

/// What a transport sees of a device, for transport tests: block-typed, two queues (64 and
/// 32 entries), VERSION_1 and EVENT_IDX offered, an 8-byte configuration space the driver
/// can read and write, and a record of what the transport did to it.
#[derive(Default)]
pub(crate) struct RecordingDevice {
    /// The configuration space.
    pub(crate) config: [u8; 8],
    /// While active: how many queues it got, which were ready, and the accepted features.
    pub(crate) activated: Option<(usize, Vec<bool>, u64)>,
    /// While active: the transport's interrupt.
    pub(crate) interrupt: Option<Arc<dyn VirtioInterrupt>>,
    /// Resets so far.
    pub(crate) resets: usize,
}

impl VirtioDevice<Arc<GuestMemoryMmap>> for RecordingDevice {
    fn device_type(&self) -> u32 {
        device_type::BLOCK
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[64, 32]
    }
    fn features(&self) -> u64 {
        features::VERSION_1 | features::RING_EVENT_IDX
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.config.get(offset as usize + i).copied().unwrap_or(0);
        }
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            if let Some(c) = self.config.get_mut(offset as usize + i) {
                *c = *b;
            }
        }
    }
    fn activate(&mut self, a: Activation<Arc<GuestMemoryMmap>>) -> Result<(), ActivateError> {
        // The transport sets EVENT_IDX on every queue as negotiated.
        let event_idx = a.acked_features & features::RING_EVENT_IDX != 0;
        assert!(a.queues.iter().all(|q| q.event_idx_enabled() == event_idx));
        let ready = a.queues.iter().map(|q| q.ready()).collect();
        self.activated = Some((a.queues.len(), ready, a.acked_features));
        self.interrupt = Some(a.interrupt);
        Ok(())
    }
    fn reset(&mut self) {
        self.resets += 1;
        self.activated = None;
        self.interrupt = None;
    }
    fn is_activated(&self) -> bool {
        self.activated.is_some()
    }
    fn process_queue(&mut self, _index: usize) {}
}
