//! The device model as every transport holds it: shared with the VMM's device thread
//! behind a mutex ([`SharedVirtioDevice`]), read once for what it offers (`Offer`), and
//! activated from the queues the driver configured (`activate`). virtio-pci and
//! virtio-ccw differ in how the driver programs the registers, not in this.

use std::sync::{Arc, Mutex, MutexGuard};

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddressSpace;

use crate::virtio::device::{ActivateError, Activation, VirtioDevice};
use crate::virtio::features;
use crate::virtio::interrupt::VirtioInterrupt;

/// A virtio device shared between its transport (vCPU threads) and the VMM's device thread.
pub type SharedVirtioDevice<M> = Arc<Mutex<dyn VirtioDevice<M>>>;

/// Locks the device model. Only a panic on another thread of the same VM poisons the lock,
/// and that VM is failed already.
pub(crate) fn lock<M: GuestAddressSpace>(
    device: &SharedVirtioDevice<M>,
) -> MutexGuard<'_, dyn VirtioDevice<M> + 'static> {
    device
        .lock()
        .expect("virtio device lock poisoned: a thread of this VM panicked")
}

/// What a device offers the driver, fixed for its lifetime: read once by the transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Offer {
    /// `VIRTIO_ID_*`.
    pub(crate) device_type: u32,
    /// Maximum size of each queue.
    pub(crate) max_sizes: Vec<u16>,
    /// Feature bits.
    pub(crate) features: u64,
}

impl Offer {
    /// Reads `device`'s offer.
    pub(crate) fn of<M: GuestAddressSpace>(device: &SharedVirtioDevice<M>) -> Self {
        let d = lock(device);
        Offer {
            device_type: d.device_type(),
            max_sizes: d.queue_max_sizes().to_vec(),
            features: d.features(),
        }
    }
}

/// Why a transport's activation failed; either way it then sets DEVICE_NEEDS_RESET.
#[derive(Debug)]
pub(crate) enum ActivationFailure {
    /// The driver configured queue `index` in a way no device can use.
    Queue {
        /// Queue index.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The device refused the activation.
    Device(ActivateError),
}

/// Activates `device` (the driver set DRIVER_OK) with the queues the driver `configured`,
/// the features it accepted and the transport's `interrupt`: each queue is checked (a ready
/// one must have its rings in guest memory, aligned) and gets EVENT_IDX as negotiated.
pub(crate) fn activate<M: GuestAddressSpace>(
    device: &SharedVirtioDevice<M>,
    mem: &M,
    interrupt: Arc<dyn VirtioInterrupt>,
    configured: &[Queue],
    acked_features: u64,
) -> Result<(), ActivationFailure> {
    let event_idx = acked_features & features::RING_EVENT_IDX != 0;
    let guest = mem.memory();
    let mut queues = Vec::with_capacity(configured.len());
    for (index, q) in configured.iter().enumerate() {
        let mut queue = Queue::try_from(q.state()).map_err(|e| ActivationFailure::Queue {
            index,
            reason: e.to_string(),
        })?;
        if queue.ready() && !queue.is_valid(&*guest) {
            return Err(ActivationFailure::Queue {
                index,
                reason: "rings outside guest memory or misaligned".to_string(),
            });
        }
        queue.set_event_idx(event_idx);
        queues.push(queue);
    }
    lock(device)
        .activate(Activation {
            mem: mem.clone(),
            interrupt,
            queues,
            acked_features,
        })
        .map_err(ActivationFailure::Device)
}

#[cfg(test)]
mod tests {
    use vm_memory::GuestMemoryMmap;

    use super::*;
    use crate::virtio::device_type;
    use crate::virtio::test_driver::{
        test_memory, RecordingDevice, RecordingInterrupt, TestDriver,
    };

    type Mem = Arc<GuestMemoryMmap>;

    fn irq() -> Arc<dyn VirtioInterrupt> {
        Arc::new(RecordingInterrupt::default())
    }

    #[test]
    fn offer_is_what_the_device_says() {
        let device: SharedVirtioDevice<Mem> = Arc::new(Mutex::new(RecordingDevice::default()));
        let offer = Offer::of(&device);
        assert_eq!(offer.device_type, device_type::BLOCK);
        assert_eq!(offer.max_sizes, [64, 32]);
        assert_eq!(
            offer.features,
            features::VERSION_1 | features::RING_EVENT_IDX
        );
    }

    #[test]
    fn activation_hands_over_the_queues_with_the_negotiated_event_idx() {
        let mem = test_memory();
        let recorder = Arc::new(Mutex::new(RecordingDevice::default()));
        let device: SharedVirtioDevice<Mem> = recorder.clone();
        // Queue 0 set up by the driver, queue 1 left alone (not ready).
        let configured = [
            TestDriver::new(&mem, 16, 0).queue(false),
            Queue::new(32).unwrap(),
        ];
        let acked = features::VERSION_1 | features::RING_EVENT_IDX;
        // RecordingDevice checks that every queue has EVENT_IDX as `acked` says.
        activate(&device, &mem, irq(), &configured, acked).unwrap();
        assert_eq!(
            recorder.lock().unwrap().activated,
            Some((2, vec![true, false], acked))
        );
        lock(&device).reset();
        let configured = [
            TestDriver::new(&mem, 16, 0).queue(true),
            Queue::new(32).unwrap(),
        ];
        activate(&device, &mem, irq(), &configured, features::VERSION_1).unwrap();
        assert!(lock(&device).is_activated());
    }

    #[test]
    fn a_ready_queue_outside_guest_memory_is_refused() {
        let mem = test_memory();
        let device: SharedVirtioDevice<Mem> = Arc::new(Mutex::new(RecordingDevice::default()));
        let mut queue = Queue::new(32).unwrap();
        queue.set_desc_table_address(Some(0xffff_0000), Some(0xffff));
        queue.set_ready(true);
        let configured = [TestDriver::new(&mem, 16, 0).queue(false), queue];
        let failure = activate(&device, &mem, irq(), &configured, features::VERSION_1).unwrap_err();
        assert!(
            matches!(failure, ActivationFailure::Queue { index: 1, ref reason } if reason.contains("outside guest memory")),
            "{failure:?}"
        );
        assert!(!lock(&device).is_activated());
    }

    #[test]
    fn a_device_refusal_is_passed_on() {
        let mem = test_memory();
        let device: SharedVirtioDevice<Mem> =
            Arc::new(Mutex::new(crate::virtio::rng::RngDevice::<Mem>::new()));
        let queues = || [TestDriver::new(&mem, 16, 0).queue(false)];
        activate(&device, &mem, irq(), &queues(), features::VERSION_1).unwrap();
        let failure = activate(&device, &mem, irq(), &queues(), features::VERSION_1).unwrap_err();
        assert!(
            matches!(
                failure,
                ActivationFailure::Device(ActivateError::AlreadyActive)
            ),
            "{failure:?}"
        );
    }
}
