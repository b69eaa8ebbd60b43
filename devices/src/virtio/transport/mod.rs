//! Virtio transports: how a driver finds and programs a device. [`pci`] is modern
//! virtio-pci over the PCI root bus; [`common_config`] its common configuration structure;
//! [`pci_interrupt`] its ISR and MSI-X side of [`crate::virtio::VirtioInterrupt`].
//! [`ccw`] is virtio over s390x channel I/O (subchannels, CCW commands, indicators).
//! [`shared_device`] is what both do with the device model: lock it, read its offer,
//! activate it from the queues the driver configured.

pub mod ccw;
pub mod common_config;
pub mod pci;
pub mod pci_interrupt;
pub mod shared_device;

pub use pci::{VirtioPciDevice, VirtioPciError};
pub use pci_interrupt::{PciInterrupt, VIRTIO_MSI_NO_VECTOR};
pub use shared_device::SharedVirtioDevice;
