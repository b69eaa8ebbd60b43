//! The root bus: 32 device slots on bus 0, the host bridge in slot 0, configuration
//! accesses routed by (bus, device, function, offset), and MMIO accesses routed to the
//! BAR that contains the address.

use std::sync::{Arc, Mutex, RwLock};

use thiserror::Error;

use super::configuration::{BarKind, BarMove, CONFIG_SPACE_SIZE, NUM_BARS};
use super::device::PciDevice;
use super::host_bridge::HostBridge;

/// Device slots on one bus.
pub const NUM_DEVICE_SLOTS: usize = 32;

/// Errors adding devices to the bus.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PciBusError {
    /// All 32 slots are taken.
    #[error("No free PCI slot")]
    NoFreeSlot,
}

/// A PCI function shared between the bus (vCPU threads) and the VMM.
pub type SharedPciDevice = Arc<Mutex<dyn PciDevice>>;

#[derive(Clone, Copy, Debug)]
struct BarRange {
    start: u64,
    size: u64,
    slot: usize,
    bar: usize,
}

/// A BAR move on the bus: which slot's BAR moved, so the VMM can re-register what it had
/// mapped there (ioeventfds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotBarMove {
    /// Device slot.
    pub slot: u8,
    /// The move.
    pub bar_move: BarMove,
}

/// The root bus.
///
/// ```
/// use devices::pci::PciBus;
/// let bus = PciBus::new();
/// let mut id = [0u8; 4];
/// bus.config_read(0, 0, 0, 0, &mut id);
/// assert_eq!(u32::from_le_bytes(id), 0x0d57_8086); // host bridge
/// bus.config_read(0, 1, 0, 0, &mut id);
/// assert_eq!(id, [0xff; 4]); // empty slot
/// ```
pub struct PciBus {
    slots: Vec<Option<SharedPciDevice>>,
    ranges: RwLock<Vec<BarRange>>,
}

impl std::fmt::Debug for PciBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let used: Vec<usize> = (0..self.slots.len())
            .filter(|s| self.slots[*s].is_some())
            .collect();
        f.debug_struct("PciBus").field("slots", &used).finish()
    }
}

impl Default for PciBus {
    fn default() -> Self {
        Self::new()
    }
}

fn lock(device: &SharedPciDevice) -> std::sync::MutexGuard<'_, dyn PciDevice + 'static> {
    device
        .lock()
        .expect("PCI device lock poisoned: a thread of this VM panicked")
}

impl PciBus {
    /// A bus holding only the host bridge (slot 0).
    pub fn new() -> Self {
        let mut slots: Vec<Option<SharedPciDevice>> = vec![None; NUM_DEVICE_SLOTS];
        slots[0] = Some(Arc::new(Mutex::new(HostBridge::new())));
        PciBus {
            slots,
            ranges: RwLock::new(Vec::new()),
        }
    }

    /// Puts `device` in the first free slot and returns the slot number. Its memory BARs
    /// must already be registered in its configuration space.
    pub fn add_device(&mut self, device: SharedPciDevice) -> Result<u8, PciBusError> {
        let slot = self
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(PciBusError::NoFreeSlot)?;
        {
            let guard = lock(&device);
            let config = guard.configuration();
            let mut ranges = self.ranges.write().expect("BAR range lock poisoned");
            for bar in 0..NUM_BARS {
                if let Some(info) = config.bar(bar).filter(|b| b.kind != BarKind::Io) {
                    ranges.push(BarRange {
                        start: config.bar_address(bar),
                        size: info.size,
                        slot,
                        bar,
                    });
                }
            }
        }
        self.slots[slot] = Some(device);
        // `slot` < NUM_DEVICE_SLOTS = 32.
        Ok(slot as u8)
    }

    /// The device in `slot`, if any.
    pub fn device(&self, slot: u8) -> Option<SharedPciDevice> {
        self.slots.get(usize::from(slot)).cloned().flatten()
    }

    fn function(&self, bus: u8, device: u8, function: u8) -> Option<&SharedPciDevice> {
        // A flat root bus of single-function devices.
        if bus != 0 || function != 0 {
            return None;
        }
        self.slots.get(usize::from(device))?.as_ref()
    }

    /// Whether an access of `len` bytes at configuration `offset` is one hardware defines:
    /// 1, 2 or 4 bytes, naturally aligned, inside the 4 KiB space.
    fn valid_config_access(offset: u16, len: usize) -> bool {
        matches!(len, 1 | 2 | 4)
            && usize::from(offset) % len == 0
            && usize::from(offset) + len <= CONFIG_SPACE_SIZE
    }

    /// Reads configuration space. Absent functions and undefined accesses read as all-ones.
    pub fn config_read(&self, bus: u8, device: u8, function: u8, offset: u16, data: &mut [u8]) {
        data.fill(0xff);
        if !Self::valid_config_access(offset, data.len()) {
            return;
        }
        let Some(dev) = self.function(bus, device, function) else {
            return;
        };
        let value = lock(dev).read_config_register(usize::from(offset / 4));
        let shift = usize::from(offset % 4);
        data.copy_from_slice(&value.to_le_bytes()[shift..shift + data.len()]);
    }

    /// Writes configuration space. Writes to absent functions and undefined accesses are
    /// dropped. Returns the BARs this write moved.
    pub fn config_write(
        &self,
        bus: u8,
        device: u8,
        function: u8,
        offset: u16,
        data: &[u8],
    ) -> Vec<SlotBarMove> {
        if !Self::valid_config_access(offset, data.len()) {
            return Vec::new();
        }
        let Some(dev) = self.function(bus, device, function) else {
            return Vec::new();
        };
        let moves =
            lock(dev).write_config_register(usize::from(offset / 4), usize::from(offset % 4), data);
        if moves.is_empty() {
            return Vec::new();
        }
        let mut ranges = self.ranges.write().expect("BAR range lock poisoned");
        for m in &moves {
            for range in ranges.iter_mut() {
                if range.slot == usize::from(device) && range.bar == m.bar {
                    range.start = m.new;
                }
            }
        }
        moves
            .into_iter()
            .map(|bar_move| SlotBarMove {
                slot: device,
                bar_move,
            })
            .collect()
    }

    fn find(&self, addr: u64, len: usize) -> Option<(BarRange, u64)> {
        let ranges = self.ranges.read().expect("BAR range lock poisoned");
        ranges.iter().find_map(|r| {
            let offset = addr.checked_sub(r.start)?;
            let end = offset.checked_add(len as u64)?;
            (end <= r.size).then_some((*r, offset))
        })
    }

    /// Routes an MMIO read to the BAR containing `[addr, addr + len)`. Returns false if no
    /// enabled BAR claims it (the VMM then treats it as unassigned space).
    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) -> bool {
        self.with_bar(addr, data.len(), |dev, bar, offset| {
            dev.read_bar(bar, offset, data)
        })
    }

    /// Routes an MMIO write to the BAR containing `[addr, addr + len)`. Returns false if no
    /// enabled BAR claims it.
    pub fn mmio_write(&self, addr: u64, data: &[u8]) -> bool {
        self.with_bar(addr, data.len(), |dev, bar, offset| {
            dev.write_bar(bar, offset, data)
        })
    }

    /// Runs `access` on the device whose BAR contains `[addr, addr + len)`, with the BAR
    /// index and the offset into it, if the device has memory decoding enabled. Returns
    /// whether it ran.
    fn with_bar(
        &self,
        addr: u64,
        len: usize,
        access: impl FnOnce(&mut dyn PciDevice, usize, u64),
    ) -> bool {
        let Some((range, offset)) = self.find(addr, len) else {
            return false;
        };
        let Some(dev) = self.slots[range.slot].as_ref() else {
            return false;
        };
        let mut dev = lock(dev);
        if !dev.configuration().memory_enabled() {
            return false;
        }
        access(&mut *dev, range.bar, offset);
        true
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::pci::{Bar, PciClass, PciConfiguration, PciIdentity};

    /// A function with one 64-bit BAR of 4 KiB backed by plain memory.
    pub(crate) struct TestDevice {
        pub config: PciConfiguration,
        pub memory: Vec<u8>,
    }

    impl TestDevice {
        pub(crate) fn new(address: u64) -> Self {
            let mut config = PciConfiguration::new(PciIdentity {
                vendor_id: 0x1af4,
                device_id: 0x1042,
                revision: 1,
                class: PciClass::MassStorage,
                subsystem_vendor_id: 0x1af4,
                subsystem_id: 0x40,
            });
            config
                .add_bar(
                    0,
                    Bar {
                        kind: BarKind::Memory64,
                        size: 0x1000,
                        prefetchable: false,
                    },
                    address,
                )
                .unwrap();
            TestDevice {
                config,
                memory: vec![0; 0x1000],
            }
        }
    }

    impl PciDevice for TestDevice {
        fn configuration(&self) -> &PciConfiguration {
            &self.config
        }
        fn write_config_register(&mut self, i: usize, o: usize, d: &[u8]) -> Vec<BarMove> {
            self.config.write_register(i, o, d)
        }
        fn read_bar(&mut self, _bar: usize, offset: u64, data: &mut [u8]) {
            let o = offset as usize;
            data.copy_from_slice(&self.memory[o..o + data.len()]);
        }
        fn write_bar(&mut self, _bar: usize, offset: u64, data: &[u8]) {
            let o = offset as usize;
            self.memory[o..o + data.len()].copy_from_slice(data);
        }
    }

    pub(crate) fn bus_with_device(address: u64) -> PciBus {
        let mut bus = PciBus::new();
        let slot = bus
            .add_device(Arc::new(Mutex::new(TestDevice::new(address))))
            .unwrap();
        assert_eq!(slot, 1);
        bus
    }

    #[test]
    fn config_reads_of_every_width() {
        let bus = bus_with_device(0x1_0000_0000);
        let mut w = [0u8; 2];
        bus.config_read(0, 1, 0, 2, &mut w);
        assert_eq!(u16::from_le_bytes(w), 0x1042);
        let mut b = [0u8; 1];
        bus.config_read(0, 1, 0, 0xb, &mut b);
        assert_eq!(b[0], 0x01);
        // Undefined: unaligned, crossing, odd sizes, out of range, other functions/buses.
        let mut d = [0u8; 4];
        bus.config_read(0, 1, 0, 2, &mut d);
        assert_eq!(d, [0xff; 4]);
        let mut t = [0u8; 3];
        bus.config_read(0, 1, 0, 0, &mut t);
        assert_eq!(t, [0xff; 3]);
        bus.config_read(0, 1, 0, 4096, &mut d);
        assert_eq!(d, [0xff; 4]);
        bus.config_read(0, 1, 1, 0, &mut d);
        assert_eq!(d, [0xff; 4]);
        bus.config_read(1, 1, 0, 0, &mut d);
        assert_eq!(d, [0xff; 4]);
        bus.config_read(0, 31, 0, 0, &mut d);
        assert_eq!(d, [0xff; 4]);
        // Extended space exists and is empty: no extended capabilities.
        bus.config_read(0, 1, 0, 0x100, &mut d);
        assert_eq!(d, [0; 4]);
    }

    #[test]
    fn mmio_routing_follows_bar_and_decode() {
        let bus = bus_with_device(0x1_0000_0000);
        // Memory decoding is off after reset.
        assert!(!bus.mmio_write(0x1_0000_0010, &[1, 2, 3, 4]));
        bus.config_write(0, 1, 0, 4, &[0x02, 0x00]);
        assert!(bus.mmio_write(0x1_0000_0010, &[1, 2, 3, 4]));
        let mut d = [0u8; 4];
        assert!(bus.mmio_read(0x1_0000_0010, &mut d));
        assert_eq!(d, [1, 2, 3, 4]);
        // Straddling the end of the BAR, or outside it, is not claimed.
        assert!(!bus.mmio_read(0x1_0000_0ffe, &mut d));
        assert!(!bus.mmio_read(0x0_ffff_fffe, &mut d));
        // Move the BAR: the bus reports it and routes the new range.
        let moves = bus.config_write(0, 1, 0, 0x10, &0x2000_0000u32.to_le_bytes());
        assert_eq!(moves.len(), 1);
        assert_eq!(moves[0].slot, 1);
        assert_eq!(moves[0].bar_move.new, 0x1_2000_0000);
        assert!(!bus.mmio_read(0x1_0000_0010, &mut d));
        assert!(bus.mmio_read(0x1_2000_0010, &mut d));
        assert_eq!(d, [1, 2, 3, 4]);
    }

    #[test]
    fn slots_run_out() {
        let mut bus = PciBus::new();
        for _ in 1..NUM_DEVICE_SLOTS {
            bus.add_device(Arc::new(Mutex::new(TestDevice::new(0))))
                .unwrap();
        }
        assert_eq!(
            bus.add_device(Arc::new(Mutex::new(TestDevice::new(0)))),
            Err(PciBusError::NoFreeSlot)
        );
        assert!(bus.device(31).is_some());
        assert!(bus.device(32).is_none());
    }
}
