//! The interface between a PCI function and the bus it sits on.

use super::configuration::{BarMove, PciConfiguration};

/// A PCI function on the root bus.
///
/// Configuration accesses arrive as whole-register reads and sub-register writes already
/// bounds-checked by the bus; BAR accesses arrive with the offset inside the BAR. A device
/// must treat both as hostile input: any offset and length the bus lets through can occur.
pub trait PciDevice: Send {
    /// The function's configuration space, for the bus to find its BARs.
    fn configuration(&self) -> &PciConfiguration;

    /// Reads 32-bit configuration register `index` (0..1024).
    fn read_config_register(&mut self, index: usize) -> u32 {
        self.configuration().read_register(index)
    }

    /// Writes `data` (1, 2 or 4 bytes, not crossing the register) at byte `offset` of
    /// configuration register `index`. Returns the BARs the write relocated.
    fn write_config_register(&mut self, index: usize, offset: usize, data: &[u8]) -> Vec<BarMove>;

    /// Reads `data.len()` bytes at `offset` inside BAR `bar`.
    fn read_bar(&mut self, bar: usize, offset: u64, data: &mut [u8]);

    /// Writes `data` at `offset` inside BAR `bar`.
    fn write_bar(&mut self, bar: usize, offset: u64, data: &[u8]);
}
