//! Address-range dispatch of guest I/O: a [`Bus`] maps non-overlapping `[base, base+len)`
//! ranges (I/O ports or MMIO addresses) to [`BusDevice`]s. The vCPU thread that took the
//! exit calls [`Bus::read`]/[`Bus::write`]; the device sees the offset into its range.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use devices::bus::{Bus, BusDevice};
//! struct Scratch(u8);
//! impl BusDevice for Scratch {
//!     fn read(&mut self, _offset: u64, data: &mut [u8]) { data.fill(self.0) }
//!     fn write(&mut self, _offset: u64, data: &[u8]) { self.0 = data[0] }
//! }
//! let bus = Bus::new();
//! bus.insert(Arc::new(Mutex::new(Scratch(0))), 0x80, 1).unwrap();
//! assert!(bus.write(0x80, &[7]));
//! let mut b = [0u8];
//! assert!(bus.read(0x80, &mut b));
//! assert_eq!(b, [7]);
//! assert!(!bus.read(0x81, &mut b));
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

/// A device on a bus. Accesses are at most 8 bytes; `offset` is from the range base.
pub trait BusDevice: Send {
    /// Guest reads `data.len()` bytes at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Guest writes `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// Errors inserting a device.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// The range overlaps a registered one.
    #[error("Range {base:#x}+{len:#x} overlaps a registered device")]
    Overlap {
        /// Base.
        base: u64,
        /// Length.
        len: u64,
    },
    /// Zero-length or wrapping range.
    #[error("Invalid range {base:#x}+{len:#x}")]
    InvalidRange {
        /// Base.
        base: u64,
        /// Length.
        len: u64,
    },
}

type Entry = (u64, Arc<Mutex<dyn BusDevice>>);

/// A set of devices by address range.
#[derive(Default)]
pub struct Bus {
    devices: RwLock<BTreeMap<u64, Entry>>,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `device` for `[base, base + len)`.
    pub fn insert(
        &self,
        device: Arc<Mutex<dyn BusDevice>>,
        base: u64,
        len: u64,
    ) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::InvalidRange { base, len })?;
        let mut map = self.devices.write().unwrap_or_else(|e| e.into_inner());
        if let Some((b, (l, _))) = map.range(..end).next_back() {
            if b + l > base {
                return Err(BusError::Overlap { base, len });
            }
        }
        map.insert(base, (len, device));
        Ok(())
    }

    fn find(&self, addr: u64, size: usize) -> Option<(u64, Arc<Mutex<dyn BusDevice>>)> {
        let map = self.devices.read().unwrap_or_else(|e| e.into_inner());
        let (base, (len, dev)) = map.range(..=addr).next_back()?;
        let offset = addr - base;
        // The whole access must be inside the device's range.
        (offset.checked_add(size as u64)? <= *len).then(|| (offset, dev.clone()))
    }

    /// Dispatches a read; false if no device covers the access.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((offset, dev)) => {
                dev.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Dispatches a write; false if no device covers the access.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((offset, dev)) => {
                dev.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .write(offset, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rec(Vec<(u64, Vec<u8>)>);
    impl BusDevice for Rec {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn overlap_and_bounds() {
        let bus = Bus::new();
        let d = Arc::new(Mutex::new(Rec(vec![])));
        bus.insert(d.clone(), 0x10, 0x10).expect("first");
        assert!(bus.insert(d.clone(), 0x1f, 1).is_err());
        assert!(bus.insert(d.clone(), 0x8, 0x9).is_err());
        assert!(bus.insert(d.clone(), 0, 0).is_err());
        assert!(bus.insert(d.clone(), u64::MAX, 2).is_err());
        bus.insert(d.clone(), 0x20, 1).expect("adjacent");
        bus.insert(d.clone(), 0x0, 0x10).expect("adjacent below");
        let mut b = [0u8; 4];
        assert!(bus.read(0x1c, &mut b));
        assert_eq!(b, [0xc; 4]);
        assert!(!bus.read(0x1d, &mut b), "access crossing the end");
        assert!(bus.write(0x12, &[1, 2]));
        assert_eq!(d.lock().expect("lock").0, vec![(2, vec![1, 2])]);
        assert!(!bus.write(0x21, &[0]));
    }
}
