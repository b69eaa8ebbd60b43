//! The virtio-pci side of [`VirtioInterrupt`]: the ISR status byte, the device status the
//! device may flag DEVICE_NEEDS_RESET in, and the config/queue MSI-X vectors the driver
//! assigned. Lock-free except for the MSI-X table, so the device thread can signal while a
//! vCPU thread programs the transport.

use std::io;
use std::sync::atomic::{AtomicU16, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use crate::pci::{MsixConfig, MsixError};
use crate::virtio::interrupt::{VirtioInterrupt, VirtioInterruptType};
use crate::virtio::status;

/// "No MSI-X vector" in `config_msix_vector` / `queue_msix_vector`.
pub const VIRTIO_MSI_NO_VECTOR: u16 = 0xffff;
/// ISR bit: a queue has used buffers.
pub const ISR_QUEUE: u8 = 0x1;
/// ISR bit: the device configuration changed.
pub const ISR_CONFIG: u8 = 0x2;

/// Interrupt state shared by a virtio-pci transport and its device.
#[derive(Debug)]
pub struct PciInterrupt {
    status: AtomicU8,
    isr: AtomicU8,
    config_generation: AtomicU8,
    config_vector: AtomicU16,
    queue_vectors: Vec<AtomicU16>,
    msix: Arc<Mutex<MsixConfig>>,
}

impl PciInterrupt {
    /// State for `num_queues` queues delivering through `msix`.
    pub fn new(num_queues: usize, msix: Arc<Mutex<MsixConfig>>) -> Self {
        PciInterrupt {
            status: AtomicU8::new(0),
            isr: AtomicU8::new(0),
            config_generation: AtomicU8::new(0),
            config_vector: AtomicU16::new(VIRTIO_MSI_NO_VECTOR),
            queue_vectors: (0..num_queues)
                .map(|_| AtomicU16::new(VIRTIO_MSI_NO_VECTOR))
                .collect(),
            msix,
        }
    }

    /// The device status byte.
    pub fn status(&self) -> u8 {
        self.status.load(Ordering::Acquire)
    }

    /// Sets the device status byte (the transport validated the transition).
    pub fn set_status(&self, value: u8) {
        self.status.store(value, Ordering::Release);
    }

    /// Reads and clears the ISR status (the register is read-to-clear).
    pub fn take_isr(&self) -> u8 {
        self.isr.swap(0, Ordering::AcqRel)
    }

    /// The configuration generation counter.
    pub fn config_generation(&self) -> u8 {
        self.config_generation.load(Ordering::Acquire)
    }

    /// The config change vector.
    pub fn config_vector(&self) -> u16 {
        self.config_vector.load(Ordering::Acquire)
    }

    /// Sets the config change vector.
    pub fn set_config_vector(&self, vector: u16) {
        self.config_vector.store(vector, Ordering::Release);
    }

    /// Queue `index`'s vector (NO_VECTOR for an unknown queue).
    pub fn queue_vector(&self, index: usize) -> u16 {
        self.queue_vectors
            .get(index)
            .map_or(VIRTIO_MSI_NO_VECTOR, |v| v.load(Ordering::Acquire))
    }

    /// Sets queue `index`'s vector.
    pub fn set_queue_vector(&self, index: usize, vector: u16) {
        if let Some(v) = self.queue_vectors.get(index) {
            v.store(vector, Ordering::Release);
        }
    }

    /// Back to the reset state (the MSI-X table belongs to the PCI function and stays).
    pub fn reset(&self) {
        self.status.store(0, Ordering::Release);
        self.isr.store(0, Ordering::Release);
        self.config_vector
            .store(VIRTIO_MSI_NO_VECTOR, Ordering::Release);
        for v in &self.queue_vectors {
            v.store(VIRTIO_MSI_NO_VECTOR, Ordering::Release);
        }
    }

    fn signal(&self, isr: u8, vector: u16) -> io::Result<()> {
        self.isr.fetch_or(isr, Ordering::AcqRel);
        if vector == VIRTIO_MSI_NO_VECTOR {
            // The driver polls (or reads the ISR): nothing to deliver.
            return Ok(());
        }
        let mut msix = self
            .msix
            .lock()
            .expect("MSI-X lock poisoned: a thread of this VM panicked");
        match msix.trigger(vector) {
            Ok(()) => Ok(()),
            // The driver assigned vectors the table does not have; the transport refuses
            // those, so this only happens if the table shrank, which it cannot.
            Err(MsixError::InvalidVector(v)) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("MSI-X vector {v} out of range"),
            )),
            Err(MsixError::Notify { source, .. }) => Err(source),
            Err(e @ MsixError::InvalidVectorCount(_)) => Err(io::Error::other(e)),
        }
    }
}

impl VirtioInterrupt for PciInterrupt {
    fn trigger(&self, kind: VirtioInterruptType) -> io::Result<()> {
        match kind {
            VirtioInterruptType::Config => {
                self.config_generation.fetch_add(1, Ordering::AcqRel);
                self.signal(ISR_CONFIG, self.config_vector())
            }
            VirtioInterruptType::Queue(q) => {
                self.signal(ISR_QUEUE, self.queue_vector(usize::from(q)))
            }
        }
    }

    fn set_needs_reset(&self) {
        let old = self
            .status
            .fetch_or(status::DEVICE_NEEDS_RESET, Ordering::AcqRel);
        if old & status::DEVICE_NEEDS_RESET == 0 {
            if let Err(e) = self.signal(ISR_CONFIG, self.config_vector()) {
                tracing::warn!(error = %e, "Failed to signal DEVICE_NEEDS_RESET");
            }
        }
    }
}
