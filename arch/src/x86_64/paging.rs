//! Initial long-mode page tables: an identity map of the first 4 GiB with 2 MiB pages
//! (PML4 → one PDPT → four page directories), produced as little-endian bytes at fixed
//! guest addresses so they can be checked without a guest.

use super::layout::{PDPT_START, PD_START, PML4_START};

const PRESENT_WRITABLE: u64 = 0x3;
const PAGE_SIZE_2M: u64 = 0x80;
/// Number of page directories: 4 × 1 GiB.
pub const PD_COUNT: u64 = 4;

/// The page tables as `(guest address, bytes)` pairs, each one 4 KiB page.
///
/// ```
/// use arch::x86_64::paging::identity_map_tables;
/// let tables = identity_map_tables();
/// assert_eq!(tables.len(), 6);
/// assert!(tables.iter().all(|(_, bytes)| bytes.len() == 4096));
/// ```
pub fn identity_map_tables() -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::with_capacity(2 + PD_COUNT as usize);
    let mut pml4 = vec![0u8; 4096];
    pml4[..8].copy_from_slice(&(PDPT_START | PRESENT_WRITABLE).to_le_bytes());
    out.push((PML4_START, pml4));

    let mut pdpt = vec![0u8; 4096];
    for i in 0..PD_COUNT {
        let entry = (PD_START + i * 0x1000) | PRESENT_WRITABLE;
        let at = (i * 8) as usize;
        pdpt[at..at + 8].copy_from_slice(&entry.to_le_bytes());
    }
    out.push((PDPT_START, pdpt));

    for i in 0..PD_COUNT {
        let mut pd = vec![0u8; 4096];
        for j in 0..512u64 {
            let phys = ((i * 512 + j) << 21) | PRESENT_WRITABLE | PAGE_SIZE_2M;
            let at = (j * 8) as usize;
            pd[at..at + 8].copy_from_slice(&phys.to_le_bytes());
        }
        out.push((PD_START + i * 0x1000, pd));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(bytes: &[u8], index: usize) -> u64 {
        u64::from_le_bytes(
            bytes[index * 8..index * 8 + 8]
                .try_into()
                .expect("8-byte slice"),
        )
    }

    /// Walks the tables like the MMU does and checks every 2 MiB page maps to itself.
    #[test]
    fn walk_translates_to_identity() {
        let tables = identity_map_tables();
        let find = |addr: u64| -> &Vec<u8> {
            &tables
                .iter()
                .find(|(a, _)| *a == addr)
                .expect("table referenced but not produced")
                .1
        };
        for va in [0u64, 0x20_0000, 0x1234_5678, 0xbfff_ffff, 0xffff_ffff] {
            let pml4e = entry(find(PML4_START), ((va >> 39) & 0x1ff) as usize);
            assert_eq!(pml4e & 1, 1);
            let pdpte = entry(find(pml4e & !0xfff), ((va >> 30) & 0x1ff) as usize);
            assert_eq!(pdpte & 1, 1);
            let pde = entry(find(pdpte & !0xfff), ((va >> 21) & 0x1ff) as usize);
            assert_eq!(pde & (PAGE_SIZE_2M | 1), PAGE_SIZE_2M | 1);
            let pa = (pde & !0x1f_ffff & 0x000f_ffff_ffff_ffff) | (va & 0x1f_ffff);
            assert_eq!(pa, va);
        }
    }
}
