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
//! The x86_64 arch layout (`arch::layout`) places the same windows (ECAM at 0xE000_0000
//! for buses 0..=255, the 32-bit window at 0xC000_0000, the 64-bit window past RAM); the
//! VMM asserts at compile time that the two agree, since `arch` and `devices` do not
//! depend on each other.
//!
//! ```
//! use devices::pci::layout;
//! // The ECAM window covers every bus number MCFG announces (only bus 0 is populated).
//! assert_eq!(layout::ECAM_SIZE, (u64::from(layout::ECAM_LAST_BUS) + 1) << 20);
//! // The 32-bit BAR window ends where the ECAM window starts.
//! assert_eq!(layout::MMIO32_BASE + layout::MMIO32_SIZE, layout::ECAM_BASE);
//! ```

/// PCI segment group described in MCFG.
pub const ECAM_SEGMENT: u16 = 0;
/// Last bus number the ECAM window (and MCFG) covers. Only bus 0 has devices: the other
/// buses read as all-ones, which is how a guest learns they are empty.
pub const ECAM_LAST_BUS: u8 = 255;
/// Guest physical base of the ECAM (memory-mapped configuration) window.
pub const ECAM_BASE: u64 = 0xE000_0000;
/// Size of the ECAM window: 1 MiB per bus (32 devices x 8 functions x 4 KiB).
pub const ECAM_SIZE: u64 = (ECAM_LAST_BUS as u64 + 1) << 20;

/// Guest physical base of the 32-bit PCI MMIO window (below 4 GiB, for 32-bit BARs).
pub const MMIO32_BASE: u64 = 0xC000_0000;
/// Size of the 32-bit PCI MMIO window.
pub const MMIO32_SIZE: u64 = 0x2000_0000;

/// Size of the 64-bit PCI MMIO window for 64-bit BARs. Its base depends on the guest's
/// RAM size (the first 1 GiB boundary past RAM and past 4 GiB), so the arch layout
/// computes it and the VMM passes it to [`crate::pci::BarAllocator::new`].
pub const MMIO64_SIZE: u64 = 64 << 30;

/// Legacy configuration address port (x86 "configuration mechanism #1").
pub const CONFIG_ADDRESS_PORT: u16 = 0xCF8;
/// First of the four legacy configuration data ports (0xCFC..=0xCFF).
pub const CONFIG_DATA_PORT: u16 = 0xCFC;
/// Number of I/O ports decoded by [`crate::pci::PciConfigIo`] (0xCF8..=0xCFF).
pub const CONFIG_IO_PORT_COUNT: u16 = 8;
