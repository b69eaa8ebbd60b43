//! Memory the devices see: a pool of zeroed pages in `.bss` handed out for virtqueues and
//! page tables, and the `virtio-drivers` [`Hal`] over it. Physical == virtual (identity map).
//!
//! The pool only grows: a test guest sets its devices up once, so freed DMA pages are not
//! reused.

use crate::paging;
use core::cell::UnsafeCell;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};
use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};

const POOL_PAGES: usize = 512;

#[repr(C, align(4096))]
struct Pool(UnsafeCell<[u8; POOL_PAGES * PAGE_SIZE]>);

// SAFETY: pages are handed out at most once (`NEXT` is advanced atomically), so no two users
// share a byte.
unsafe impl Sync for Pool {}

// Not cleared at entry (see link.ld): `alloc_pages` zeroes the pages it hands out.
#[link_section = ".noinit"]
static POOL: Pool = Pool(UnsafeCell::new([0; POOL_PAGES * PAGE_SIZE]));
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Allocates `pages` zeroed, page-aligned, physically contiguous pages.
pub fn alloc_pages(pages: usize) -> Option<NonNull<u8>> {
    let first = NEXT.fetch_add(pages, Ordering::AcqRel);
    if first + pages > POOL_PAGES {
        return None;
    }
    // SAFETY: `first..first + pages` lies inside the pool and was handed out to no one else.
    let ptr = unsafe { (POOL.0.get() as *mut u8).add(first * PAGE_SIZE) };
    // SAFETY: the range is ours alone (see above); zeroing it is a plain write.
    unsafe { core::ptr::write_bytes(ptr, 0, pages * PAGE_SIZE) };
    NonNull::new(ptr)
}

/// `virtio-drivers`' view of guest memory.
pub struct GuestHal;

// SAFETY: `dma_alloc` returns zeroed, page-aligned, unaliased pages whose physical address
// equals their virtual one; `mmio_phys_to_virt` identity-maps the BAR range first.
unsafe impl Hal for GuestHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let ptr = alloc_pages(pages).expect("the DMA page pool is exhausted");
        (ptr.as_ptr() as PhysAddr, ptr)
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, _vaddr: NonNull<u8>, _pages: usize) -> i32 {
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, size: usize) -> NonNull<u8> {
        paging::identity_map(paddr, size as u64, false);
        NonNull::new(paddr as *mut u8).expect("a BAR at physical address 0")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        // Identity-mapped and cache-coherent: the device reads the buffer where it is.
        buffer.as_ptr() as *mut u8 as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}
