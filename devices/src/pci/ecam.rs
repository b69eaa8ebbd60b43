//! Configuration access through ECAM: the memory-mapped window MCFG describes, 4 KiB per
//! function at `bus << 20 | device << 15 | function << 12`.

use std::sync::Arc;

use super::bus::{PciBus, SlotBarMove};
use super::layout::ECAM_SIZE;

/// The ECAM window in front of a bus; the VMM routes `[ECAM_BASE, ECAM_BASE + ECAM_SIZE)`
/// here with the offset inside the window.
///
/// ```
/// use std::sync::Arc;
/// use devices::pci::{PciBus, PciConfigMmio};
/// let ecam = PciConfigMmio::new(Arc::new(PciBus::new()));
/// let mut class = [0u8; 2];
/// ecam.read(0x0a, &mut class); // 00:00.0, class/subclass
/// assert_eq!(u16::from_le_bytes(class), 0x0600);
/// ```
#[derive(Debug, Clone)]
pub struct PciConfigMmio {
    bus: Arc<PciBus>,
}

/// (bus, device, function, register offset) of an ECAM offset, if inside the window.
fn decode(offset: u64) -> Option<(u8, u8, u8, u16)> {
    if offset >= ECAM_SIZE {
        return None;
    }
    Some((
        (offset >> 20) as u8,
        ((offset >> 15) & 0x1f) as u8,
        ((offset >> 12) & 0x7) as u8,
        (offset & 0xfff) as u16,
    ))
}

impl PciConfigMmio {
    /// ECAM access to `bus`.
    pub fn new(bus: Arc<PciBus>) -> Self {
        PciConfigMmio { bus }
    }

    /// Reads at `offset` inside the window; undefined accesses read as all-ones.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        match offset
            .checked_add(data.len() as u64)
            .filter(|end| *end <= ECAM_SIZE)
            .and_then(|_| decode(offset))
        {
            Some((bus, dev, func, reg)) => self.bus.config_read(bus, dev, func, reg, data),
            None => data.fill(0xff),
        }
    }

    /// Writes at `offset` inside the window; undefined accesses are dropped. Returns the
    /// BARs the write moved.
    pub fn write(&self, offset: u64, data: &[u8]) -> Vec<SlotBarMove> {
        match offset
            .checked_add(data.len() as u64)
            .filter(|end| *end <= ECAM_SIZE)
            .and_then(|_| decode(offset))
        {
            Some((bus, dev, func, reg)) => self.bus.config_write(bus, dev, func, reg, data),
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::bus::tests::bus_with_device;

    fn ecam(bdf: (u64, u64, u64), reg: u64) -> u64 {
        bdf.0 << 20 | bdf.1 << 15 | bdf.2 << 12 | reg
    }

    #[test]
    fn reads_and_writes_reach_the_function() {
        let cfg = PciConfigMmio::new(Arc::new(bus_with_device(0x1_0000_0000)));
        let mut d = [0u8; 4];
        cfg.read(ecam((0, 1, 0), 0), &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x1042_1af4);
        // BAR sizing through ECAM.
        cfg.write(ecam((0, 1, 0), 0x10), &[0xff; 4]);
        cfg.write(ecam((0, 1, 0), 0x14), &[0xff; 4]);
        cfg.read(ecam((0, 1, 0), 0x10), &mut d);
        assert_eq!(u32::from_le_bytes(d), 0xffff_f004);
        cfg.read(ecam((0, 1, 0), 0x14), &mut d);
        assert_eq!(u32::from_le_bytes(d), 0xffff_ffff);
    }

    #[test]
    fn outside_the_window_is_all_ones() {
        let cfg = PciConfigMmio::new(Arc::new(bus_with_device(0)));
        let mut d = [0u8; 4];
        cfg.read(ECAM_SIZE, &mut d);
        assert_eq!(d, [0xff; 4]);
        cfg.read(ECAM_SIZE - 2, &mut d);
        assert_eq!(d, [0xff; 4]);
        cfg.read(u64::MAX - 1, &mut d);
        assert_eq!(d, [0xff; 4]);
        assert!(cfg.write(u64::MAX - 1, &[0; 4]).is_empty());
        // Function 1 of device 1 does not exist.
        cfg.read(ecam((0, 1, 1), 0), &mut d);
        assert_eq!(d, [0xff; 4]);
        // 8-byte accesses are not defined for configuration space.
        let mut q = [0u8; 8];
        cfg.read(ecam((0, 1, 0), 0), &mut q);
        assert_eq!(q, [0xff; 8]);
    }
}
