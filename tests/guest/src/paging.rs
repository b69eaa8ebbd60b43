//! Extends the boot identity map (low 4 GiB, from [`crate::boot`]) above 4 GiB: 64-bit PCI
//! BARs (uncached) and RAM such as a high initrd (write-back); 2 MiB pages, page tables from
//! the DMA pool.

use crate::dma;
use x86_64::structures::paging::{PageTable, PageTableFlags as F};

extern "C" {
    static mut boot_pml4: PageTable;
}

const TWO_MIB: u64 = 2 << 20;

/// The table an entry points to, allocating it if the entry is empty.
///
/// # Safety
/// `table` must be a live page table of the identity map.
unsafe fn next_table(table: &mut PageTable, index: usize) -> &mut PageTable {
    let entry = &mut table[index];
    if entry.is_unused() {
        let page = dma::alloc_pages(1).expect("the page pool is exhausted");
        entry.set_addr(
            x86_64::PhysAddr::new(page.as_ptr() as u64),
            // U/S as on every entry once ring 3 is in use ([`crate::user`]); no ring-0
            // code relies on pages ring 3 cannot reach.
            F::PRESENT | F::WRITABLE | F::USER_ACCESSIBLE,
        );
    }
    assert!(
        !entry.flags().contains(F::HUGE_PAGE),
        "cannot split a huge page"
    );
    // SAFETY: the entry points to a page table (allocated above or by the boot code) that is
    // identity-mapped below 4 GiB.
    unsafe { &mut *(entry.addr().as_u64() as *mut PageTable) }
}

/// Identity-maps `[addr, addr + len)` if it is not mapped yet: write-back for RAM (`cached`),
/// uncached for MMIO.
pub fn identity_map(addr: u64, len: u64, cached: bool) {
    let end = addr.saturating_add(len.max(1));
    if end <= 1 << 32 {
        return;
    }
    // SAFETY: single-threaded use by the boot processor; `boot_pml4` is the active PML4,
    // identity-mapped, and only this function changes it after boot.
    let pml4 = unsafe { &mut *core::ptr::addr_of_mut!(boot_pml4) };
    let mut page = addr & !(TWO_MIB - 1);
    while page < end {
        let (i4, i3, i2) = (
            (page >> 39) as usize & 511,
            (page >> 30) as usize & 511,
            (page >> 21) as usize & 511,
        );
        // SAFETY: walking our own identity-mapped tables.
        let pd = unsafe { next_table(next_table(pml4, i4), i3) };
        if pd[i2].is_unused() {
            let mut flags = F::PRESENT | F::WRITABLE | F::HUGE_PAGE | F::USER_ACCESSIBLE;
            if !cached {
                flags |= F::NO_CACHE | F::WRITE_THROUGH;
            }
            pd[i2].set_addr(x86_64::PhysAddr::new(page), flags);
            x86_64::instructions::tlb::flush(x86_64::VirtAddr::new(page));
        }
        page += TWO_MIB;
    }
}
