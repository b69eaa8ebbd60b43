//! Configuration access through the legacy x86 ports: the address latch at 0xCF8 and the
//! data window at 0xCFC..=0xCFF ("configuration mechanism #1").

use std::sync::{Arc, Mutex};

use super::bus::{PciBus, SlotBarMove};

const ENABLE_BIT: u32 = 1 << 31;
/// Bits of the address latch that hold state: enable, bus, device, function, register.
const ADDRESS_MASK: u32 = ENABLE_BIT | 0x00ff_fffc;

/// The 0xCF8..=0xCFF port range in front of a bus; the VMM routes those ports here with
/// the offset from 0xCF8.
///
/// Only 32-bit accesses to 0xCF8 reach the address latch (narrower ones go elsewhere on
/// real chipsets, 0xCF9 being the reset control register); here they read as all-ones and
/// are dropped.
///
/// ```
/// use std::sync::Arc;
/// use devices::pci::{PciBus, PciConfigIo};
/// let io = PciConfigIo::new(Arc::new(PciBus::new()));
/// io.write(0, &0x8000_0000u32.to_le_bytes()); // enable, 00:00.0, register 0
/// let mut id = [0u8; 4];
/// io.read(4, &mut id);
/// assert_eq!(u32::from_le_bytes(id), 0x0d57_8086);
/// ```
#[derive(Debug)]
pub struct PciConfigIo {
    bus: Arc<PciBus>,
    address: Mutex<u32>,
}

impl PciConfigIo {
    /// Port access to `bus`.
    pub fn new(bus: Arc<PciBus>) -> Self {
        PciConfigIo {
            bus,
            address: Mutex::new(0),
        }
    }

    fn latch(&self) -> u32 {
        *self.address.lock().expect("CF8 latch lock poisoned")
    }

    /// Decodes the latch plus the data port offset (0..4) into (bus, dev, fn, offset).
    fn target(&self, port_offset: u64, len: usize) -> Option<(u8, u8, u8, u16)> {
        let address = self.latch();
        if address & ENABLE_BIT == 0 || port_offset + len as u64 > 4 {
            return None;
        }
        Some((
            (address >> 16) as u8,
            ((address >> 11) & 0x1f) as u8,
            ((address >> 8) & 0x7) as u8,
            (address & 0xfc) as u16 + port_offset as u16,
        ))
    }

    /// Reads port `0xCF8 + offset`.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        match offset {
            0 if data.len() == 4 => data.copy_from_slice(&self.latch().to_le_bytes()),
            4..=7 => {
                if let Some((bus, dev, func, reg)) = self.target(offset - 4, data.len()) {
                    self.bus.config_read(bus, dev, func, reg, data);
                }
            }
            _ => {}
        }
    }

    /// Writes port `0xCF8 + offset`. Returns the BARs the write moved.
    pub fn write(&self, offset: u64, data: &[u8]) -> Vec<SlotBarMove> {
        match offset {
            0 if data.len() == 4 => {
                let mut bytes = [0u8; 4];
                bytes.copy_from_slice(data);
                *self.address.lock().expect("CF8 latch lock poisoned") =
                    u32::from_le_bytes(bytes) & ADDRESS_MASK;
                Vec::new()
            }
            4..=7 => match self.target(offset - 4, data.len()) {
                Some((bus, dev, func, reg)) => self.bus.config_write(bus, dev, func, reg, data),
                None => Vec::new(),
            },
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::bus::tests::bus_with_device;

    fn select(io: &PciConfigIo, dev: u32, reg: u32) {
        io.write(0, &(ENABLE_BIT | dev << 11 | reg).to_le_bytes());
    }

    #[test]
    fn latch_and_data_ports() {
        let io = PciConfigIo::new(Arc::new(bus_with_device(0x1_0000_0000)));
        select(&io, 1, 0);
        let mut d = [0u8; 4];
        io.read(0, &mut d);
        assert_eq!(u32::from_le_bytes(d), ENABLE_BIT | 1 << 11);
        io.read(4, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x1042_1af4);
        // Byte and word reads through 0xCFC + n.
        let mut w = [0u8; 2];
        io.read(6, &mut w);
        assert_eq!(u16::from_le_bytes(w), 0x1042);
        let mut b = [0u8; 1];
        io.read(5, &mut b);
        assert_eq!(b[0], 0x1a);
        // Reserved low bits of the latch are dropped.
        io.write(0, &(ENABLE_BIT | 1 << 11 | 0x13).to_le_bytes());
        io.read(0, &mut d);
        assert_eq!(u32::from_le_bytes(d) & 3, 0);
    }

    #[test]
    fn bar_sizing_through_ports() {
        let io = PciConfigIo::new(Arc::new(bus_with_device(0x1_0000_0000)));
        select(&io, 1, 0x10);
        io.write(4, &[0xff; 4]);
        let mut d = [0u8; 4];
        io.read(4, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0xffff_f004);
    }

    #[test]
    fn undefined_accesses() {
        let io = PciConfigIo::new(Arc::new(bus_with_device(0)));
        let mut d = [0u8; 4];
        // Disabled latch: all-ones.
        io.write(0, &(1u32 << 11).to_le_bytes());
        io.read(4, &mut d);
        assert_eq!(d, [0xff; 4]);
        // Narrow accesses to 0xCF8 do not touch the latch.
        select(&io, 1, 0);
        io.write(1, &[0]);
        io.write(0, &[0, 0]);
        io.read(0, &mut d);
        assert_eq!(u32::from_le_bytes(d), ENABLE_BIT | 1 << 11);
        let mut b = [0u8; 1];
        io.read(1, &mut b);
        assert_eq!(b, [0xff]);
        // A dword at 0xCFE crosses the data window.
        io.read(6, &mut d);
        assert_eq!(d, [0xff; 4]);
        // Outside 0xCF8..=0xCFF.
        io.read(8, &mut d);
        assert_eq!(d, [0xff; 4]);
    }
}
