//! MSI-X: the capability, the vector table and pending-bit array (PBA) a function exposes
//! in one of its BARs, masking, and delivery through the [`MsiNotifier`] the VMM provides.
//!
//! The VMM maps each vector to a KVM GSI route (the message address/data from the table)
//! and an irqfd; [`MsiNotifier::update`] tells it when the guest reprograms or (un)masks a
//! vector and [`MsiNotifier::notify`] fires the vector. While a vector (or the whole
//! function) is masked, a trigger only sets the vector's pending bit; unmasking delivers it.

use std::io;
use std::sync::Arc;

use thiserror::Error;

/// Capability ID of MSI-X.
pub const MSIX_CAPABILITY_ID: u8 = 0x11;
/// Size of one table entry in bytes.
pub const MSIX_TABLE_ENTRY_SIZE: u64 = 16;
/// Largest number of vectors a function may have.
pub const MAX_MSIX_VECTORS: u16 = 2048;
/// Length of the MSI-X capability structure in bytes.
pub const MSIX_CAPABILITY_LEN: usize = 12;

const CONTROL_ENABLE: u16 = 1 << 15;
const CONTROL_FUNCTION_MASK: u16 = 1 << 14;
const ENTRY_MASKED: u32 = 1;

/// The message a vector sends: a memory write of `data` to `address`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsiMessage {
    /// Message address (for x86, the LAPIC window 0xFEEx_xxxx with the destination).
    pub address: u64,
    /// Message data (vector, delivery mode).
    pub data: u32,
}

/// Delivers MSI-X vectors on behalf of a function; implemented by the VMM (KVM GSI routes
/// and irqfds) and by tests.
pub trait MsiNotifier: Send + Sync {
    /// Sends vector `vector`'s message now.
    fn notify(&self, vector: u16) -> io::Result<()>;
    /// The guest changed vector `vector`: its message, or whether it is masked (a vector
    /// is masked by its own mask bit, the function mask, or MSI-X being disabled).
    fn update(&self, vector: u16, message: MsiMessage, masked: bool) -> io::Result<()>;
}

/// Errors creating an MSI-X configuration.
#[derive(Debug, Error)]
pub enum MsixError {
    /// A function has 1..=2048 vectors.
    #[error("Invalid number of MSI-X vectors {0}")]
    InvalidVectorCount(u16),
    /// A trigger named a vector outside the table.
    #[error("MSI-X vector {0} out of range")]
    InvalidVector(u16),
    /// The VMM failed to deliver the vector.
    #[error("Failed to deliver MSI-X vector {vector}")]
    Notify {
        /// The vector.
        vector: u16,
        /// Why.
        #[source]
        source: io::Error,
    },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct TableEntry {
    address_low: u32,
    address_high: u32,
    data: u32,
    control: u32,
}

impl TableEntry {
    const RESET: TableEntry = TableEntry {
        address_low: 0,
        address_high: 0,
        data: 0,
        control: ENTRY_MASKED,
    };

    fn message(&self) -> MsiMessage {
        MsiMessage {
            address: u64::from(self.address_high) << 32 | u64::from(self.address_low),
            data: self.data,
        }
    }

    fn field(&self, index: usize) -> u32 {
        [self.address_low, self.address_high, self.data, self.control][index]
    }

    fn set_field(&mut self, index: usize, value: u32) {
        match index {
            0 => self.address_low = value,
            1 => self.address_high = value,
            2 => self.data = value,
            // Only the mask bit of vector control is writable.
            _ => self.control = value & ENTRY_MASKED,
        }
    }
}

/// The MSI-X state of one function.
///
/// ```
/// use std::sync::Arc;
/// use devices::pci::{MsiMessage, MsiNotifier, MsixConfig};
///
/// struct Log;
/// impl MsiNotifier for Log {
///     fn notify(&self, _vector: u16) -> std::io::Result<()> { Ok(()) }
///     fn update(&self, _v: u16, _m: MsiMessage, _masked: bool) -> std::io::Result<()> { Ok(()) }
/// }
///
/// let mut msix = MsixConfig::new(2, Arc::new(Log)).unwrap();
/// msix.set_message_control(0x8000); // enable
/// // Vectors start masked: a trigger only sets the pending bit.
/// msix.trigger(1).unwrap();
/// let mut pba = [0u8; 8];
/// msix.read_pba(0, &mut pba);
/// assert_eq!(u64::from_le_bytes(pba), 0b10);
/// // Unmasking vector 1 delivers it and clears the pending bit.
/// msix.write_table(16 + 12, &0u32.to_le_bytes());
/// msix.read_pba(0, &mut pba);
/// assert_eq!(u64::from_le_bytes(pba), 0);
/// ```
pub struct MsixConfig {
    table: Vec<TableEntry>,
    pba: Vec<u64>,
    enabled: bool,
    function_masked: bool,
    notifier: Arc<dyn MsiNotifier>,
}

impl std::fmt::Debug for MsixConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsixConfig")
            .field("vectors", &self.table.len())
            .field("enabled", &self.enabled)
            .field("function_masked", &self.function_masked)
            .finish_non_exhaustive()
    }
}

impl MsixConfig {
    /// A disabled MSI-X function with `vectors` masked vectors.
    pub fn new(vectors: u16, notifier: Arc<dyn MsiNotifier>) -> Result<Self, MsixError> {
        if vectors == 0 || vectors > MAX_MSIX_VECTORS {
            return Err(MsixError::InvalidVectorCount(vectors));
        }
        Ok(MsixConfig {
            table: vec![TableEntry::RESET; usize::from(vectors)],
            pba: vec![0; usize::from(vectors).div_ceil(64)],
            enabled: false,
            function_masked: false,
            notifier,
        })
    }

    /// Number of vectors in the table.
    pub fn num_vectors(&self) -> u16 {
        // The table length was checked against MAX_MSIX_VECTORS at creation.
        self.table.len() as u16
    }

    /// Size of the table in bytes.
    pub fn table_size(&self) -> u64 {
        self.table.len() as u64 * MSIX_TABLE_ENTRY_SIZE
    }

    /// Size of the PBA in bytes.
    pub fn pba_size(&self) -> u64 {
        self.pba.len() as u64 * 8
    }

    /// Whether MSI-X is enabled in the capability.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The capability structure (bytes and write mask) for the configuration space: the
    /// table at `table_offset` of BAR `table_bar`, the PBA at `pba_offset` of `pba_bar`.
    /// Offsets must be 8-byte aligned.
    pub fn capability(
        &self,
        table_bar: u8,
        table_offset: u32,
        pba_bar: u8,
        pba_offset: u32,
    ) -> ([u8; MSIX_CAPABILITY_LEN], [u8; MSIX_CAPABILITY_LEN]) {
        let mut data = [0u8; MSIX_CAPABILITY_LEN];
        data[0] = MSIX_CAPABILITY_ID;
        data[2..4].copy_from_slice(&(self.num_vectors() - 1).to_le_bytes());
        data[4..8].copy_from_slice(&((table_offset & !7) | u32::from(table_bar & 7)).to_le_bytes());
        data[8..12].copy_from_slice(&((pba_offset & !7) | u32::from(pba_bar & 7)).to_le_bytes());
        let mut mask = [0u8; MSIX_CAPABILITY_LEN];
        // Message control: MSI-X enable and function mask are the only writable bits.
        mask[3] = 0xc0;
        (data, mask)
    }

    /// The guest wrote the capability's message control register.
    pub fn set_message_control(&mut self, control: u16) {
        let was_masked: Vec<bool> = (0..self.table.len()).map(|v| self.masked(v)).collect();
        self.enabled = control & CONTROL_ENABLE != 0;
        self.function_masked = control & CONTROL_FUNCTION_MASK != 0;
        for (vector, was) in was_masked.into_iter().enumerate() {
            if was != self.masked(vector) {
                self.announce(vector);
                self.deliver_if_pending(vector);
            }
        }
    }

    /// Message control bits this configuration holds (enable, function mask).
    pub fn message_control(&self) -> u16 {
        let mut control = self.num_vectors() - 1;
        if self.enabled {
            control |= CONTROL_ENABLE;
        }
        if self.function_masked {
            control |= CONTROL_FUNCTION_MASK;
        }
        control
    }

    /// Reads the table at byte `offset`. Only aligned 4- and 8-byte accesses are defined;
    /// anything else reads as all-ones.
    pub fn read_table(&self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        let Some((vector, field)) = self.table_field(offset, data.len()) else {
            return;
        };
        let entry = &self.table[vector];
        for (i, chunk) in data.chunks_mut(4).enumerate() {
            chunk.copy_from_slice(&entry.field(field + i).to_le_bytes());
        }
    }

    /// Writes the table at byte `offset` (aligned 4- or 8-byte accesses; others are
    /// dropped). A changed message or mask is announced to the notifier, and unmasking a
    /// pending vector delivers it.
    pub fn write_table(&mut self, offset: u64, data: &[u8]) {
        let Some((vector, field)) = self.table_field(offset, data.len()) else {
            return;
        };
        let before = self.table[vector];
        let was_masked = self.masked(vector);
        for (i, chunk) in data.chunks(4).enumerate() {
            let mut bytes = [0u8; 4];
            bytes.copy_from_slice(chunk);
            self.table[vector].set_field(field + i, u32::from_le_bytes(bytes));
        }
        if self.table[vector] != before {
            self.announce(vector);
        }
        if was_masked && !self.masked(vector) {
            self.deliver_if_pending(vector);
        }
    }

    /// Reads the PBA at byte `offset` (aligned 4- or 8-byte accesses; others read as
    /// all-ones). The PBA is read-only: writes are dropped by the caller.
    pub fn read_pba(&self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        let len = data.len() as u64;
        if !(len == 4 || len == 8)
            || !offset.is_multiple_of(len)
            || offset
                .checked_add(len)
                .is_none_or(|end| end > self.pba_size())
        {
            return;
        }
        let word = self.pba[(offset / 8) as usize].to_le_bytes();
        let start = (offset % 8) as usize;
        data.copy_from_slice(&word[start..start + data.len()]);
    }

    /// Fires `vector`: delivered now if MSI-X is enabled and the vector unmasked; recorded
    /// in the PBA if masked; dropped if MSI-X is disabled (this function has no INTx).
    pub fn trigger(&mut self, vector: u16) -> Result<(), MsixError> {
        let index = usize::from(vector);
        if index >= self.table.len() {
            return Err(MsixError::InvalidVector(vector));
        }
        if !self.enabled {
            return Ok(());
        }
        if self.masked(index) {
            self.pba[index / 64] |= 1 << (index % 64);
            return Ok(());
        }
        self.notifier
            .notify(vector)
            .map_err(|source| MsixError::Notify { vector, source })
    }

    /// Back to the power-on state: disabled, all vectors masked, nothing pending.
    pub fn reset(&mut self) {
        self.table.fill(TableEntry::RESET);
        self.pba.fill(0);
        self.enabled = false;
        self.function_masked = false;
        for vector in 0..self.table.len() {
            self.announce(vector);
        }
    }

    fn masked(&self, vector: usize) -> bool {
        !self.enabled || self.function_masked || self.table[vector].control & ENTRY_MASKED != 0
    }

    fn table_field(&self, offset: u64, len: usize) -> Option<(usize, usize)> {
        let len = len as u64;
        if !(len == 4 || len == 8)
            || !offset.is_multiple_of(len)
            || offset
                .checked_add(len)
                .is_none_or(|end| end > self.table_size())
        {
            return None;
        }
        let vector = (offset / MSIX_TABLE_ENTRY_SIZE) as usize;
        let field = ((offset % MSIX_TABLE_ENTRY_SIZE) / 4) as usize;
        Some((vector, field))
    }

    fn announce(&self, vector: usize) {
        let masked = self.masked(vector);
        // `vector` indexes the table, whose length fits in u16.
        if let Err(e) = self
            .notifier
            .update(vector as u16, self.table[vector].message(), masked)
        {
            tracing::warn!(vector, error = %e, "Failed to update MSI-X route");
        }
    }

    fn deliver_if_pending(&mut self, vector: usize) {
        let bit = 1u64 << (vector % 64);
        if self.masked(vector) || self.pba[vector / 64] & bit == 0 {
            return;
        }
        self.pba[vector / 64] &= !bit;
        if let Err(e) = self.notifier.notify(vector as u16) {
            tracing::warn!(vector, error = %e, "Failed to deliver pending MSI-X vector");
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records what the function asked the VMM to do.
    #[derive(Default)]
    pub(crate) struct RecordingNotifier {
        pub notified: Mutex<Vec<u16>>,
        pub updates: Mutex<Vec<(u16, MsiMessage, bool)>>,
    }

    impl MsiNotifier for RecordingNotifier {
        fn notify(&self, vector: u16) -> io::Result<()> {
            self.notified.lock().unwrap().push(vector);
            Ok(())
        }
        fn update(&self, vector: u16, message: MsiMessage, masked: bool) -> io::Result<()> {
            self.updates.lock().unwrap().push((vector, message, masked));
            Ok(())
        }
    }

    fn msix(vectors: u16) -> (MsixConfig, Arc<RecordingNotifier>) {
        let n = Arc::new(RecordingNotifier::default());
        (MsixConfig::new(vectors, n.clone()).unwrap(), n)
    }

    #[test]
    fn vector_count_is_bounded() {
        let n = Arc::new(RecordingNotifier::default());
        assert!(MsixConfig::new(0, n.clone()).is_err());
        assert!(MsixConfig::new(2049, n.clone()).is_err());
        assert_eq!(MsixConfig::new(65, n).unwrap().pba_size(), 16);
    }

    #[test]
    fn capability_layout() {
        let (m, _) = msix(3);
        let (data, mask) = m.capability(0, 0x8000, 0, 0x1_0000);
        assert_eq!(data[0], MSIX_CAPABILITY_ID);
        assert_eq!(u16::from_le_bytes([data[2], data[3]]), 2);
        assert_eq!(
            u32::from_le_bytes([data[4], data[5], data[6], data[7]]),
            0x8000
        );
        assert_eq!(
            u32::from_le_bytes([data[8], data[9], data[10], data[11]]),
            0x1_0000
        );
        assert_eq!(mask[3], 0xc0);
        assert_eq!(mask.iter().filter(|b| **b != 0).count(), 1);
    }

    #[test]
    fn table_programming_is_announced() {
        let (mut m, n) = msix(2);
        m.write_table(16, &0xfee0_1000u32.to_le_bytes());
        m.write_table(16 + 8, &0x4041u32.to_le_bytes());
        let mut buf = [0u8; 8];
        m.read_table(16, &mut buf);
        assert_eq!(u64::from_le_bytes(buf), 0xfee0_1000);
        m.read_table(16 + 8, &mut buf);
        // data = 0x4041, vector control = masked
        assert_eq!(u64::from_le_bytes(buf), 0x1_0000_4041);
        let last = *n.updates.lock().unwrap().last().unwrap();
        assert_eq!(
            last,
            (
                1,
                MsiMessage {
                    address: 0xfee0_1000,
                    data: 0x4041
                },
                true
            )
        );
        // Reserved bits of vector control are read-only.
        m.write_table(12, &0xffff_ffffu32.to_le_bytes());
        let mut w = [0u8; 4];
        m.read_table(12, &mut w);
        assert_eq!(u32::from_le_bytes(w), 1);
    }

    #[test]
    fn odd_table_accesses_read_all_ones_and_are_dropped() {
        let (mut m, _) = msix(1);
        m.write_table(0, &0x1234u32.to_le_bytes());
        let mut b = [0u8; 2];
        m.read_table(0, &mut b);
        assert_eq!(b, [0xff, 0xff]);
        let mut w = [0u8; 4];
        m.read_table(2, &mut w);
        assert_eq!(w, [0xff; 4]);
        m.read_table(16, &mut w);
        assert_eq!(w, [0xff; 4]);
        m.write_table(0, &[0x55, 0x55]);
        m.write_table(1, &[0x55; 4]);
        m.write_table(16, &[0x55; 4]);
        m.read_table(0, &mut w);
        assert_eq!(u32::from_le_bytes(w), 0x1234);
        let mut q = [0u8; 8];
        m.read_pba(8, &mut q);
        assert_eq!(q, [0xff; 8]);
    }

    #[test]
    fn masking_defers_delivery() {
        let (mut m, n) = msix(2);
        // Disabled: dropped, not pending.
        m.trigger(0).unwrap();
        m.set_message_control(CONTROL_ENABLE | CONTROL_FUNCTION_MASK);
        m.write_table(12, &0u32.to_le_bytes());
        // Function-masked: pending.
        m.trigger(0).unwrap();
        assert!(n.notified.lock().unwrap().is_empty());
        let mut w = [0u8; 4];
        m.read_pba(0, &mut w);
        assert_eq!(u32::from_le_bytes(w), 1);
        // Clearing the function mask delivers the pending vector.
        m.set_message_control(CONTROL_ENABLE);
        assert_eq!(*n.notified.lock().unwrap(), vec![0]);
        m.read_pba(0, &mut w);
        assert_eq!(u32::from_le_bytes(w), 0);
        // Unmasked: delivered at once.
        m.trigger(0).unwrap();
        assert_eq!(*n.notified.lock().unwrap(), vec![0, 0]);
        // Vector 1 is still masked by its own bit.
        m.trigger(1).unwrap();
        assert_eq!(n.notified.lock().unwrap().len(), 2);
        assert!(matches!(m.trigger(2), Err(MsixError::InvalidVector(2))));
        assert_eq!(m.message_control(), CONTROL_ENABLE | 1);
    }

    #[test]
    fn reset_masks_everything() {
        let (mut m, _) = msix(1);
        m.set_message_control(CONTROL_ENABLE);
        m.write_table(12, &0u32.to_le_bytes());
        m.reset();
        assert!(!m.enabled());
        let mut w = [0u8; 4];
        m.read_table(12, &mut w);
        assert_eq!(u32::from_le_bytes(w), 1);
    }
}
