//! Allocation of BAR addresses from a PCI MMIO window.
//!
//! BARs are naturally aligned (a BAR of size S sits at a multiple of S), so the allocator
//! hands out first-fit, size-aligned ranges from the window and takes them back when a
//! device goes away.

use thiserror::Error;

/// Errors allocating BAR space.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BarAllocError {
    /// Sizes are powers of two.
    #[error("Invalid BAR size {0:#x}")]
    InvalidSize(u64),
    /// The window has no aligned free range of that size left.
    #[error("PCI MMIO window exhausted for a BAR of {0:#x} bytes")]
    Exhausted(u64),
    /// The window wraps around the address space.
    #[error("Invalid window {base:#x}+{size:#x}")]
    InvalidWindow {
        /// Window base.
        base: u64,
        /// Window size.
        size: u64,
    },
}

/// First-fit allocator of naturally aligned ranges in `[base, base + size)`.
///
/// ```
/// use devices::pci::BarAllocator;
///
/// let mut alloc = BarAllocator::new(0x1_0000_0000, 0x1_0000_0000).unwrap();
/// let a = alloc.allocate(0x1000).unwrap();
/// let b = alloc.allocate(0x10_0000).unwrap();
/// assert_eq!(a, 0x1_0000_0000);
/// assert_eq!(b % 0x10_0000, 0);
/// alloc.free(a);
/// assert_eq!(alloc.allocate(0x1000).unwrap(), a);
/// ```
#[derive(Debug, Clone)]
pub struct BarAllocator {
    base: u64,
    end: u64,
    /// Allocated `(start, size)` ranges, sorted by start.
    used: Vec<(u64, u64)>,
}

impl BarAllocator {
    /// An allocator over `[base, base + size)`.
    pub fn new(base: u64, size: u64) -> Result<Self, BarAllocError> {
        let end = base
            .checked_add(size)
            .ok_or(BarAllocError::InvalidWindow { base, size })?;
        Ok(BarAllocator {
            base,
            end,
            used: Vec::new(),
        })
    }

    /// Allocates `size` bytes aligned to `size`; returns the base address.
    pub fn allocate(&mut self, size: u64) -> Result<u64, BarAllocError> {
        if !size.is_power_of_two() {
            return Err(BarAllocError::InvalidSize(size));
        }
        let align = |addr: u64| addr.checked_add(size - 1).map(|a| a & !(size - 1));
        let mut candidate = align(self.base);
        let mut slot = self.used.len();
        for (i, (start, len)) in self.used.iter().enumerate() {
            let Some(c) = candidate else { break };
            if c.checked_add(size).is_some_and(|e| e <= *start) {
                slot = i;
                break;
            }
            candidate = align(start + len);
        }
        let start = candidate.ok_or(BarAllocError::Exhausted(size))?;
        match start.checked_add(size) {
            Some(end) if end <= self.end => {
                self.used.insert(slot, (start, size));
                Ok(start)
            }
            _ => Err(BarAllocError::Exhausted(size)),
        }
    }

    /// Returns the range starting at `start` to the window (unknown addresses are ignored).
    pub fn free(&mut self, start: u64) {
        self.used.retain(|(s, _)| *s != start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_are_aligned_and_disjoint() {
        let mut a = BarAllocator::new(0x1000, 0x10_0000).unwrap();
        let x = a.allocate(0x1000).unwrap();
        let y = a.allocate(0x4_0000).unwrap();
        let z = a.allocate(0x1000).unwrap();
        assert_eq!(x, 0x1000);
        assert_eq!(y, 0x4_0000);
        assert_eq!(z, 0x2000);
        assert_eq!(y % 0x4_0000, 0);
    }

    #[test]
    fn exhaustion_and_reuse() {
        let mut a = BarAllocator::new(0, 0x2000).unwrap();
        assert_eq!(a.allocate(0x3000), Err(BarAllocError::InvalidSize(0x3000)));
        let x = a.allocate(0x1000).unwrap();
        let _y = a.allocate(0x1000).unwrap();
        assert_eq!(a.allocate(0x1000), Err(BarAllocError::Exhausted(0x1000)));
        a.free(x);
        assert_eq!(a.allocate(0x1000), Ok(x));
        assert_eq!(a.allocate(0x4000), Err(BarAllocError::Exhausted(0x4000)));
    }

    #[test]
    fn window_at_top_of_address_space() {
        let mut a = BarAllocator::new(u64::MAX - 0x1fff, 0x1000).unwrap();
        assert_eq!(a.allocate(0x1000), Ok(u64::MAX - 0x1fff));
        assert_eq!(a.allocate(0x1000), Err(BarAllocError::Exhausted(0x1000)));
        assert!(BarAllocator::new(u64::MAX, 2).is_err());
    }
}
