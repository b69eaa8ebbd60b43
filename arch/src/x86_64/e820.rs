//! The x86 memory map handed to the guest: e820 entries in the Linux zero page, and
//! the same ranges as the PVH memory map.

use super::layout;

/// e820 entry types (as in Linux `arch/x86/include/uapi/asm/e820.h` and the PVH memmap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum E820Type {
    /// Usable RAM.
    Ram = 1,
    /// Reserved: firmware, MMIO configuration space.
    Reserved = 2,
}

/// One range of the memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    /// First byte.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// What the range is.
    pub kind: E820Type,
}

/// The memory map for `mem_size` bytes of RAM, sorted by address: low RAM below the
/// EBDA, the reserved BIOS area holding the ACPI tables, RAM from 1 MiB to the hole,
/// the PCI ECAM window (Linux only trusts MCFG if its range is reserved), and RAM above
/// 4 GiB.
///
/// ```
/// use arch::x86_64::e820::{memory_map, E820Type};
/// let map = memory_map(128 << 20);
/// let ram: u64 = map.iter().filter(|e| e.kind == E820Type::Ram).map(|e| e.size).sum();
/// assert_eq!(ram, (128 << 20) - (0x10_0000 - 0x9fc00));
/// ```
pub fn memory_map(mem_size: u64) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry {
            addr: 0,
            size: layout::EBDA_START,
            kind: E820Type::Ram,
        },
        E820Entry {
            addr: layout::EBDA_START,
            size: layout::HIMEM_START - layout::EBDA_START,
            kind: E820Type::Reserved,
        },
    ];
    let low_end = layout::low_ram_end(mem_size);
    if low_end > layout::HIMEM_START {
        map.push(E820Entry {
            addr: layout::HIMEM_START,
            size: low_end - layout::HIMEM_START,
            kind: E820Type::Ram,
        });
    }
    map.push(E820Entry {
        addr: layout::PCI_ECAM_START,
        size: layout::PCI_ECAM_SIZE,
        kind: E820Type::Reserved,
    });
    if let Some((start, size)) = layout::ram_regions(mem_size).get(1) {
        map.push(E820Entry {
            addr: start.0,
            size: *size,
            kind: E820Type::Ram,
        });
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_is_sorted_and_disjoint() {
        for mem in [16u64 << 20, 256 << 20, 3 << 30, 6 << 30] {
            let map = memory_map(mem);
            for pair in map.windows(2) {
                assert!(pair[0].addr + pair[0].size <= pair[1].addr, "{map:?}");
            }
            let ram: u64 = map
                .iter()
                .filter(|e| e.kind == E820Type::Ram)
                .map(|e| e.size)
                .sum();
            assert_eq!(ram, mem - (layout::HIMEM_START - layout::EBDA_START));
        }
    }

    #[test]
    fn high_memory_starts_at_4g() {
        let map = memory_map(6 << 30);
        let last = map.last().expect("map is never empty");
        assert_eq!(last.addr, 1 << 32);
        assert_eq!(last.size, (6 << 30) - layout::MMIO32_START);
        assert_eq!(last.kind, E820Type::Ram);
    }
}
