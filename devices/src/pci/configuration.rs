//! The configuration space of one PCI function: a type 0 header, BARs with the sizing
//! protocol, and a capabilities list.
//!
//! The space is 4 KiB (PCI Express extended configuration space, reachable through ECAM);
//! everything past the capabilities we add reads as zero, which tells the guest there is
//! no extended capability. Every register has a write mask: bits outside it are read-only,
//! so a guest cannot change identification registers or capability headers, and writing
//! all-ones to a BAR reads back its size mask, exactly like hardware.

use thiserror::Error;

/// Size of the configuration space of one function (extended, as seen through ECAM).
pub const CONFIG_SPACE_SIZE: usize = 4096;
/// Number of 32-bit registers in the configuration space.
pub const NUM_CONFIG_REGISTERS: usize = CONFIG_SPACE_SIZE / 4;
/// Number of BARs in a type 0 header.
pub const NUM_BARS: usize = 6;

const COMMAND_REG: usize = 1;
const CLASS_REG: usize = 2;
const HEADER_REG: usize = 3;
const BAR0_REG: usize = 4;
const SUBSYSTEM_REG: usize = 11;
const CAPABILITY_POINTER_OFFSET: usize = 0x34;
const INTERRUPT_REG: usize = 15;
/// First offset available to capabilities (after the standard header).
const FIRST_CAPABILITY_OFFSET: usize = 0x40;
/// Capabilities live in the legacy 256-byte space.
const CAPABILITY_SPACE_END: usize = 0x100;

/// Command register: I/O space, memory space, bus master, parity, SERR, INTx disable.
const COMMAND_WRITABLE: u32 = 0x0547;
/// Command register bit enabling decoding of memory BARs.
pub const COMMAND_MEMORY_SPACE: u16 = 0x2;
/// Status register bit announcing a capabilities list.
const STATUS_CAPABILITIES_LIST: u32 = 1 << 4;

const BAR_IO_SPACE: u32 = 0x1;
const BAR_MEM_TYPE_64: u32 = 0x4;
const BAR_PREFETCHABLE: u32 = 0x8;

/// Errors building a configuration space.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PciConfigError {
    /// The BAR index is not 0..=5 (or 0..=4 for a 64-bit BAR, which takes two registers).
    #[error("Invalid BAR index {0}")]
    InvalidBarIndex(usize),
    /// The BAR register is already in use.
    #[error("BAR {0} is already in use")]
    BarInUse(usize),
    /// BAR sizes are powers of two of at least 16 bytes (4 for I/O).
    #[error("Invalid BAR size {0:#x}")]
    InvalidBarSize(u64),
    /// The BAR address is not aligned to its size.
    #[error("BAR address {0:#x} is not aligned to its size")]
    UnalignedBarAddress(u64),
    /// The capabilities do not fit in the 256-byte configuration space.
    #[error("No room for a capability of {0} bytes")]
    CapabilitySpaceFull(usize),
    /// A capability needs its ID and next-pointer bytes plus a mask of the same length.
    #[error("Malformed capability")]
    MalformedCapability,
}

/// PCI class codes used by our functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciClass {
    /// Host bridge (class 0x06, subclass 0x00).
    HostBridge,
    /// Mass storage, other (0x01/0x80), what virtio-blk reports.
    MassStorage,
    /// Network controller, Ethernet (0x02/0x00).
    Network,
    /// Communication controller, other (0x07/0x80): consoles and vsock.
    Communication,
    /// Unclassified/other device (0xff/0x00).
    Other,
}

impl PciClass {
    fn code(self) -> (u8, u8) {
        match self {
            PciClass::HostBridge => (0x06, 0x00),
            PciClass::MassStorage => (0x01, 0x80),
            PciClass::Network => (0x02, 0x00),
            PciClass::Communication => (0x07, 0x80),
            PciClass::Other => (0xff, 0x00),
        }
    }
}

/// Identification of a function in its type 0 header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciIdentity {
    /// Vendor ID.
    pub vendor_id: u16,
    /// Device ID.
    pub device_id: u16,
    /// Revision ID.
    pub revision: u8,
    /// Class code.
    pub class: PciClass,
    /// Subsystem vendor ID.
    pub subsystem_vendor_id: u16,
    /// Subsystem ID.
    pub subsystem_id: u16,
}

/// Kind of a BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    /// 32-bit memory BAR.
    Memory32,
    /// 64-bit memory BAR (takes this and the next BAR register).
    Memory64,
    /// I/O port BAR.
    Io,
}

/// A BAR as registered by the device model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    /// Kind of BAR.
    pub kind: BarKind,
    /// Size in bytes, a power of two.
    pub size: u64,
    /// Whether the memory is prefetchable.
    pub prefetchable: bool,
}

/// A BAR that the guest moved by writing its BAR register: the VMM re-registers whatever
/// it had mapped at the old address (ioeventfds, for instance).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarMove {
    /// BAR index.
    pub bar: usize,
    /// Previous base address.
    pub old: u64,
    /// New base address.
    pub new: u64,
    /// Size of the BAR.
    pub size: u64,
}

/// The configuration space of one function.
///
/// ```
/// use devices::pci::{Bar, BarKind, PciClass, PciConfiguration, PciIdentity};
///
/// let mut config = PciConfiguration::new(PciIdentity {
///     vendor_id: 0x1af4,
///     device_id: 0x1042,
///     revision: 1,
///     class: PciClass::MassStorage,
///     subsystem_vendor_id: 0x1af4,
///     subsystem_id: 0x40,
/// });
/// let bar = Bar { kind: BarKind::Memory64, size: 0x4000, prefetchable: false };
/// config.add_bar(0, bar, 0x1_0000_0000).unwrap();
/// // The sizing protocol: write all-ones, read back the size mask.
/// config.write_register(4, 0, &[0xff; 4]);
/// config.write_register(5, 0, &[0xff; 4]);
/// assert_eq!(config.read_register(4), 0xffff_c004);
/// assert_eq!(config.read_register(5), 0xffff_ffff);
/// ```
#[derive(Clone)]
pub struct PciConfiguration {
    registers: Box<[u32; NUM_CONFIG_REGISTERS]>,
    writable: Box<[u32; NUM_CONFIG_REGISTERS]>,
    bars: [Option<Bar>; NUM_BARS],
    /// Address of each BAR as last reported to the VMM.
    assigned: [u64; NUM_BARS],
    last_capability: Option<usize>,
    next_capability: usize,
}

impl std::fmt::Debug for PciConfiguration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PciConfiguration")
            .field("id", &format_args!("{:#010x}", self.registers[0]))
            .field("bars", &self.bars)
            .finish_non_exhaustive()
    }
}

impl PciConfiguration {
    /// A type 0 header with the given identity, no BARs and no capabilities.
    pub fn new(identity: PciIdentity) -> Self {
        let mut registers = Box::new([0u32; NUM_CONFIG_REGISTERS]);
        let mut writable = Box::new([0u32; NUM_CONFIG_REGISTERS]);
        let (class, subclass) = identity.class.code();
        registers[0] = u32::from(identity.device_id) << 16 | u32::from(identity.vendor_id);
        writable[COMMAND_REG] = COMMAND_WRITABLE;
        registers[CLASS_REG] =
            u32::from(class) << 24 | u32::from(subclass) << 16 | u32::from(identity.revision);
        // Cache line size and latency timer are read/write; header type 0, single function.
        writable[HEADER_REG] = 0x0000_ffff;
        registers[SUBSYSTEM_REG] =
            u32::from(identity.subsystem_id) << 16 | u32::from(identity.subsystem_vendor_id);
        // Interrupt line is scratch space for the OS; interrupt pin 0: no INTx, MSI-X only.
        writable[INTERRUPT_REG] = 0x0000_00ff;
        PciConfiguration {
            registers,
            writable,
            bars: [None; NUM_BARS],
            assigned: [0; NUM_BARS],
            last_capability: None,
            next_capability: FIRST_CAPABILITY_OFFSET,
        }
    }

    /// Reads the 32-bit register `index` (0..1024). Out-of-range indices read as all-ones.
    pub fn read_register(&self, index: usize) -> u32 {
        self.registers.get(index).copied().unwrap_or(0xffff_ffff)
    }

    /// Writes `data` (1, 2 or 4 bytes) at byte `offset` within register `index`, honouring
    /// the register's write mask. Malformed accesses (crossing the register, other sizes,
    /// out-of-range index) are ignored, as a bus would drop them.
    ///
    /// Returns the BARs this write relocated. A relocation is reported only while memory
    /// decoding is enabled and the BAR does not hold the sizing pattern, so the sizing
    /// protocol (which Linux runs with decoding off) and half-written 64-bit addresses are
    /// not reported; enabling decoding reports every BAR moved meanwhile.
    pub fn write_register(&mut self, index: usize, offset: usize, data: &[u8]) -> Vec<BarMove> {
        if index >= NUM_CONFIG_REGISTERS || !matches!(data.len(), 1 | 2 | 4) {
            return Vec::new();
        }
        if offset + data.len() > 4 {
            return Vec::new();
        }
        let mut value = 0u32;
        let mut byte_mask = 0u32;
        for (i, byte) in data.iter().enumerate() {
            let shift = (offset + i) * 8;
            value |= u32::from(*byte) << shift;
            byte_mask |= 0xff << shift;
        }
        let mask = self.writable[index] & byte_mask;
        self.registers[index] = (self.registers[index] & !mask) | (value & mask);
        if index != COMMAND_REG && self.bar_of_register(index).is_none() {
            return Vec::new();
        }
        self.bar_moves()
    }

    /// Compares each BAR's programmed address with the last one reported.
    fn bar_moves(&mut self) -> Vec<BarMove> {
        let mut moves = Vec::new();
        if !self.memory_enabled() {
            return moves;
        }
        for bar in 0..NUM_BARS {
            let Some(info) = self.bars[bar] else { continue };
            let new = self.bar_address(bar);
            if new != self.assigned[bar] && !self.bar_is_sizing(bar) {
                moves.push(BarMove {
                    bar,
                    old: self.assigned[bar],
                    new,
                    size: info.size,
                });
                self.assigned[bar] = new;
            }
        }
        moves
    }

    /// Registers BAR `index` at `address` (which must be aligned to `bar.size`).
    pub fn add_bar(&mut self, index: usize, bar: Bar, address: u64) -> Result<(), PciConfigError> {
        let wide = bar.kind == BarKind::Memory64;
        if index >= NUM_BARS || (wide && index + 1 >= NUM_BARS) {
            return Err(PciConfigError::InvalidBarIndex(index));
        }
        let min_size = if bar.kind == BarKind::Io { 4 } else { 16 };
        if !bar.size.is_power_of_two() || bar.size < min_size {
            return Err(PciConfigError::InvalidBarSize(bar.size));
        }
        if bar.kind != BarKind::Memory64 && bar.size > 1 << 31 {
            return Err(PciConfigError::InvalidBarSize(bar.size));
        }
        if address & (bar.size - 1) != 0 {
            return Err(PciConfigError::UnalignedBarAddress(address));
        }
        let in_use = |i: usize| {
            self.bars[i].is_some()
                || (i > 0 && self.bars[i - 1].is_some_and(|b| b.kind == BarKind::Memory64))
        };
        if in_use(index) || (wide && in_use(index + 1)) {
            return Err(PciConfigError::BarInUse(index));
        }
        let size_mask = !(bar.size - 1);
        let reg = BAR0_REG + index;
        let flags = match bar.kind {
            BarKind::Io => BAR_IO_SPACE,
            BarKind::Memory32 => 0,
            BarKind::Memory64 => BAR_MEM_TYPE_64,
        } | if bar.prefetchable && bar.kind != BarKind::Io {
            BAR_PREFETCHABLE
        } else {
            0
        };
        let low_mask = if bar.kind == BarKind::Io {
            0xffff_fffc
        } else {
            0xffff_fff0
        };
        self.registers[reg] = (address as u32 & low_mask) | flags;
        self.writable[reg] = size_mask as u32 & low_mask;
        if wide {
            self.registers[reg + 1] = (address >> 32) as u32;
            self.writable[reg + 1] = (size_mask >> 32) as u32;
        }
        self.bars[index] = Some(bar);
        self.assigned[index] = address;
        Ok(())
    }

    /// The BAR registered at `index`, if any.
    pub fn bar(&self, index: usize) -> Option<Bar> {
        self.bars.get(index).copied().flatten()
    }

    /// The current base address of BAR `index` as programmed by the guest (0 if absent).
    pub fn bar_address(&self, index: usize) -> u64 {
        let Some(bar) = self.bar(index) else {
            return 0;
        };
        let reg = BAR0_REG + index;
        match bar.kind {
            BarKind::Io => u64::from(self.registers[reg] & 0xffff_fffc),
            BarKind::Memory32 => u64::from(self.registers[reg] & 0xffff_fff0),
            BarKind::Memory64 => {
                u64::from(self.registers[reg + 1]) << 32
                    | u64::from(self.registers[reg] & 0xffff_fff0)
            }
        }
    }

    /// Whether (either half of) the BAR holds the sizing pattern (all writable bits set):
    /// the guest is measuring it, not assigning it an address.
    fn bar_is_sizing(&self, index: usize) -> bool {
        let reg = BAR0_REG + index;
        let wide = self.bars[index].is_some_and(|b| b.kind == BarKind::Memory64);
        let low = self.registers[reg] & self.writable[reg] == self.writable[reg];
        // Linux sizes the two halves of a 64-bit BAR one after the other.
        let high = wide && self.registers[reg + 1] == self.writable[reg + 1];
        low || high
    }

    /// Which BAR (by index) register `index` belongs to.
    fn bar_of_register(&self, index: usize) -> Option<usize> {
        let bar = index.checked_sub(BAR0_REG)?;
        if bar >= NUM_BARS {
            return None;
        }
        if self.bars[bar].is_some() {
            return Some(bar);
        }
        let low = bar.checked_sub(1)?;
        self.bars[low]
            .is_some_and(|b| b.kind == BarKind::Memory64)
            .then_some(low)
    }

    /// The command register.
    pub fn command(&self) -> u16 {
        self.registers[COMMAND_REG] as u16
    }

    /// Whether memory BARs are decoded (command register memory space enable).
    pub fn memory_enabled(&self) -> bool {
        self.command() & COMMAND_MEMORY_SPACE != 0
    }

    /// Appends a capability. `data` starts with the capability ID and a placeholder next
    /// pointer (filled in here); `writable` is its byte-wise write mask, same length.
    /// Returns the capability's offset in configuration space.
    pub fn add_capability(
        &mut self,
        data: &[u8],
        writable: &[u8],
    ) -> Result<usize, PciConfigError> {
        if data.len() < 2 || writable.len() != data.len() {
            return Err(PciConfigError::MalformedCapability);
        }
        let offset = self.next_capability;
        let end = offset + data.len();
        if end > CAPABILITY_SPACE_END {
            return Err(PciConfigError::CapabilitySpaceFull(data.len()));
        }
        for (i, (byte, mask)) in data.iter().zip(writable).enumerate() {
            // The ID and next pointer are never writable.
            let mask = if i < 2 { 0 } else { *mask };
            let byte = if i == 1 { 0 } else { *byte };
            self.set_byte(offset + i, byte, mask);
        }
        match self.last_capability {
            Some(last) => self.set_byte(last + 1, offset as u8, 0),
            None => {
                self.set_byte(CAPABILITY_POINTER_OFFSET, offset as u8, 0);
                self.registers[COMMAND_REG] |= STATUS_CAPABILITIES_LIST << 16;
            }
        }
        self.last_capability = Some(offset);
        self.next_capability = (end + 3) & !3;
        Ok(offset)
    }

    /// Reads `data.len()` bytes at byte `offset` (any alignment, within the space).
    pub fn read_bytes(&self, offset: usize, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            let at = offset + i;
            *byte = self
                .registers
                .get(at / 4)
                .map_or(0xff, |reg| (reg >> ((at % 4) * 8)) as u8);
        }
    }

    fn set_byte(&mut self, offset: usize, value: u8, mask: u8) {
        let shift = (offset % 4) * 8;
        let reg = &mut self.registers[offset / 4];
        *reg = (*reg & !(0xff << shift)) | u32::from(value) << shift;
        let w = &mut self.writable[offset / 4];
        *w = (*w & !(0xff << shift)) | u32::from(mask) << shift;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PciConfiguration {
        PciConfiguration::new(PciIdentity {
            vendor_id: 0x1af4,
            device_id: 0x1041,
            revision: 1,
            class: PciClass::Network,
            subsystem_vendor_id: 0x1af4,
            subsystem_id: 0x40,
        })
    }

    #[test]
    fn identity_is_read_only() {
        let mut c = config();
        assert_eq!(c.read_register(0), 0x1041_1af4);
        c.write_register(0, 0, &[0, 0, 0, 0]);
        assert_eq!(c.read_register(0), 0x1041_1af4);
        assert_eq!(c.read_register(2) >> 8, 0x02_00_00);
    }

    #[test]
    fn command_register_masks_reserved_bits() {
        let mut c = config();
        c.write_register(1, 0, &[0xff, 0xff]);
        assert_eq!(c.command(), 0x0547);
        assert!(c.memory_enabled());
        c.write_register(1, 0, &[0x00]);
        assert!(!c.memory_enabled());
    }

    #[test]
    fn bar64_sizing_and_relocation() {
        let mut c = config();
        let bar = Bar {
            kind: BarKind::Memory64,
            size: 0x8_0000,
            prefetchable: true,
        };
        c.add_bar(2, bar, 0x10_0000_0000).unwrap();
        assert_eq!(c.read_register(6), 0xc);
        assert_eq!(c.read_register(7), 0x10);
        // Sizing with decoding off reports nothing.
        assert!(c.write_register(6, 0, &[0xff; 4]).is_empty());
        assert!(c.write_register(7, 0, &[0xff; 4]).is_empty());
        assert_eq!(c.read_register(6), 0xfff8_000c);
        assert_eq!(c.read_register(7), 0xffff_ffff);
        // Restore: still nothing when decoding comes back on at the old address.
        c.write_register(6, 0, &0u32.to_le_bytes());
        c.write_register(7, 0, &0x10u32.to_le_bytes());
        assert!(c.write_register(1, 0, &[0x2, 0]).is_empty());
        // Sizing with decoding on is not a move either.
        assert!(c.write_register(6, 0, &[0xff; 4]).is_empty());
        assert!(c.write_register(7, 0, &[0xff; 4]).is_empty());
        c.write_register(7, 0, &0x10u32.to_le_bytes());
        // Moving it with decoding on is reported once the address is no longer the pattern.
        let moved = c.write_register(6, 0, &0x0008_0000u32.to_le_bytes());
        assert_eq!(
            moved,
            vec![BarMove {
                bar: 2,
                old: 0x10_0000_0000,
                new: 0x10_0008_0000,
                size: 0x8_0000
            }]
        );
        assert_eq!(c.bar_address(2), 0x10_0008_0000);
        // Moving it with decoding off is reported when decoding is enabled again.
        c.write_register(1, 0, &[0, 0]);
        assert!(c.write_register(6, 0, &0u32.to_le_bytes()).is_empty());
        let moved = c.write_register(1, 0, &[0x6, 0]);
        assert_eq!(moved.len(), 1);
        assert_eq!(moved[0].new, 0x10_0000_0000);
    }

    #[test]
    fn bar32_and_io_sizing() {
        let mut c = config();
        c.add_bar(
            0,
            Bar {
                kind: BarKind::Memory32,
                size: 0x1000,
                prefetchable: false,
            },
            0xc000_0000,
        )
        .unwrap();
        c.add_bar(
            1,
            Bar {
                kind: BarKind::Io,
                size: 0x20,
                prefetchable: false,
            },
            0x1000,
        )
        .unwrap();
        c.write_register(4, 0, &[0xff; 4]);
        c.write_register(5, 0, &[0xff; 4]);
        assert_eq!(c.read_register(4), 0xffff_f000);
        assert_eq!(c.read_register(5), 0xffff_ffe1);
        // Unused BARs read zero whatever is written: size 0 means "not implemented".
        c.write_register(8, 0, &[0xff; 4]);
        assert_eq!(c.read_register(8), 0);
    }

    #[test]
    fn bar_errors() {
        let mut c = config();
        let bar = Bar {
            kind: BarKind::Memory64,
            size: 0x1000,
            prefetchable: false,
        };
        assert_eq!(
            c.add_bar(5, bar, 0),
            Err(PciConfigError::InvalidBarIndex(5))
        );
        assert_eq!(
            c.add_bar(
                0,
                Bar {
                    size: 0x1001,
                    ..bar
                },
                0
            ),
            Err(PciConfigError::InvalidBarSize(0x1001))
        );
        assert_eq!(
            c.add_bar(0, bar, 0x800),
            Err(PciConfigError::UnalignedBarAddress(0x800))
        );
        c.add_bar(0, bar, 0).unwrap();
        assert_eq!(c.add_bar(1, bar, 0), Err(PciConfigError::BarInUse(1)));
    }

    #[test]
    fn capabilities_are_linked() {
        let mut c = config();
        let first = c
            .add_capability(&[0x09, 0xaa, 4, 1, 2], &[0xff; 5])
            .unwrap();
        let second = c
            .add_capability(&[0x11, 0, 0, 0], &[0, 0, 0, 0xc0])
            .unwrap();
        assert_eq!(first, 0x40);
        assert_eq!(second, 0x48);
        let mut b = [0u8; 1];
        c.read_bytes(0x34, &mut b);
        assert_eq!(b[0], 0x40);
        c.read_bytes(0x41, &mut b);
        assert_eq!(b[0], 0x48);
        c.read_bytes(0x49, &mut b);
        assert_eq!(b[0], 0);
        assert_ne!(c.read_register(1) & (1 << 20), 0);
        // ID/next are read-only even if the mask says otherwise; other bytes follow the mask.
        c.write_register(0x10, 0, &[0, 0]);
        c.write_register(0x10, 2, &[0x55]);
        c.read_bytes(0x40, &mut b);
        assert_eq!(b[0], 0x09);
        c.read_bytes(0x42, &mut b);
        assert_eq!(b[0], 0x55);
        c.write_register(0x12, 3, &[0xff]);
        c.read_bytes(0x4b, &mut b);
        assert_eq!(b[0], 0xc0);
    }

    #[test]
    fn capability_space_is_bounded() {
        let mut c = config();
        let big = [0u8; 0xb0];
        assert!(c.add_capability(&big, &big).is_ok());
        assert_eq!(
            c.add_capability(
                &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                &[0; 17]
            ),
            Err(PciConfigError::CapabilitySpaceFull(17))
        );
    }

    #[test]
    fn malformed_writes_are_ignored() {
        let mut c = config();
        c.write_register(1, 3, &[0xff, 0xff]);
        c.write_register(1, 0, &[0xff, 0xff, 0xff]);
        c.write_register(NUM_CONFIG_REGISTERS, 0, &[0xff; 4]);
        assert_eq!(c.command(), 0);
        assert_eq!(c.read_register(NUM_CONFIG_REGISTERS), 0xffff_ffff);
    }
}
