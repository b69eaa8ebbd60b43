//! Where the PCI root complex lives in the guest physical address space.
//!
//! This is the one place that fixes the ECAM window and the BAR windows; the VMM's ACPI
//! code (MCFG, the host bridge's `_CRS`, the E820/memory map reservations) and the arch
//! memory layout import these constants instead of repeating the numbers.
//!
//! Linux only trusts an MCFG region that is also reserved (E820 reserved, or a PNP0C02
//! motherboard resource in ACPI); otherwise it falls back to ports 0xCF8/0xCFC, which are
//! also implemented (see [`crate::pci::PciConfigIo`]).
//!
//! ```
//! use devices::pci::layout;
//! // The ECAM window covers exactly the buses the root complex decodes.
//! assert_eq!(layout::ECAM_SIZE, u64::from(layout::ECAM_BUS_COUNT) << 20);
//! // The 32-bit BAR window ends where the ECAM window starts.
//! assert_eq!(layout::MMIO32_BASE + layout::MMIO32_SIZE, layout::ECAM_BASE);
//! ```

/// PCI segment group described in MCFG.
pub const ECAM_SEGMENT: u16 = 0;
/// Number of buses the root complex decodes (bus 0 only: a flat root bus).
pub const ECAM_BUS_COUNT: u8 = 1;
/// Guest physical base of the ECAM (memory-mapped configuration) window.
pub const ECAM_BASE: u64 = 0xE000_0000;
/// Size of the ECAM window: 1 MiB per bus (32 devices x 8 functions x 4 KiB).
pub const ECAM_SIZE: u64 = (ECAM_BUS_COUNT as u64) << 20;

/// Guest physical base of the 32-bit PCI MMIO window (below 4 GiB, for 32-bit BARs).
pub const MMIO32_BASE: u64 = 0xC000_0000;
/// Size of the 32-bit PCI MMIO window.
pub const MMIO32_SIZE: u64 = 0x2000_0000;

/// Guest physical base of the 64-bit PCI MMIO window used for 64-bit BARs. The VMM must
/// keep guest RAM below it (64 GiB), or pass its own window to
/// [`crate::pci::BarAllocator::new`].
pub const MMIO64_BASE: u64 = 0x10_0000_0000;
/// Size of the 64-bit PCI MMIO window (64 GiB: fits a 40-bit guest physical address space).
pub const MMIO64_SIZE: u64 = 0x10_0000_0000;

/// Legacy configuration address port (x86 "configuration mechanism #1").
pub const CONFIG_ADDRESS_PORT: u16 = 0xCF8;
/// First of the four legacy configuration data ports (0xCFC..=0xCFF).
pub const CONFIG_DATA_PORT: u16 = 0xCFC;
/// Number of I/O ports decoded by [`crate::pci::PciConfigIo`] (0xCF8..=0xCFF).
pub const CONFIG_IO_PORT_COUNT: u16 = 8;
