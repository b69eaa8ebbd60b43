//! PCI: a flat root bus (bus 0, host bridge at 00:00.0) reached through ECAM and the
//! legacy 0xCF8/0xCFC ports, per-function configuration spaces with BARs and
//! capabilities, BAR allocation, and MSI-X.
//!
//! Layout: [`layout`] fixes the guest addresses (ECAM and BAR windows); [`configuration`]
//! is one function's configuration space; [`device`] the trait a function implements;
//! [`bus`] routes configuration and BAR accesses; [`ecam`] and [`config_io`] are the two
//! configuration access mechanisms; [`allocator`] hands out BAR addresses; [`msix`] is the
//! MSI-X capability, table and PBA.
//!
//! Wiring by the VMM: route MMIO `[ECAM_BASE, +ECAM_SIZE)` to [`PciConfigMmio`], ports
//! 0xCF8..=0xCFF to [`PciConfigIo`], and any other MMIO to [`PciBus::mmio_read`] /
//! [`PciBus::mmio_write`]; re-register ioeventfds when a config write reports a
//! [`SlotBarMove`].

pub mod allocator;
pub mod bus;
pub mod config_io;
pub mod configuration;
pub mod device;
pub mod ecam;
pub mod host_bridge;
pub mod layout;
pub mod msix;

pub use allocator::{BarAllocError, BarAllocator};
pub use bus::{PciBus, PciBusError, SharedPciDevice, SlotBarMove};
pub use config_io::PciConfigIo;
pub use configuration::{
    Bar, BarKind, BarMove, PciClass, PciConfigError, PciConfiguration, PciIdentity,
};
pub use device::PciDevice;
pub use ecam::PciConfigMmio;
pub use host_bridge::HostBridge;
pub use msix::{MsiMessage, MsiNotifier, MsixConfig, MsixError};
