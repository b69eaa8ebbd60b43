//! How a virtio device signals the driver: the transport implements [`VirtioInterrupt`]
//! (virtio-pci: ISR bits and MSI-X vectors), the device only names what happened.

use std::io;

/// What a device signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VirtioInterruptType {
    /// The device configuration changed (config generation moves on).
    Config,
    /// Queue `n` has new used buffers.
    Queue(u16),
}

/// The interrupt (and error) channel from a device to its driver.
///
/// ```
/// use std::sync::Mutex;
/// use devices::virtio::{VirtioInterrupt, VirtioInterruptType};
///
/// #[derive(Default)]
/// struct Recorder(Mutex<Vec<VirtioInterruptType>>);
/// impl VirtioInterrupt for Recorder {
///     fn trigger(&self, kind: VirtioInterruptType) -> std::io::Result<()> {
///         self.0.lock().unwrap().push(kind);
///         Ok(())
///     }
///     fn set_needs_reset(&self) {}
/// }
/// let r = Recorder::default();
/// r.trigger(VirtioInterruptType::Queue(0)).unwrap();
/// assert_eq!(*r.0.lock().unwrap(), vec![VirtioInterruptType::Queue(0)]);
/// ```
pub trait VirtioInterrupt: Send + Sync {
    /// Signals `kind` to the driver.
    fn trigger(&self, kind: VirtioInterruptType) -> io::Result<()>;

    /// The device hit an error it cannot recover from without a reset (a corrupted ring):
    /// the transport sets DEVICE_NEEDS_RESET and sends a configuration interrupt.
    fn set_needs_reset(&self);
}
