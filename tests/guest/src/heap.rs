//! The global allocator: a bump allocator over a static 1 MiB arena. Frees are ignored — the
//! guest allocates a few long-lived driver buffers (virtio-console's) and then only reports.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};

const ARENA: usize = 1 << 20;

#[repr(C, align(4096))]
struct Arena(UnsafeCell<[u8; ARENA]>);

// SAFETY: every byte is handed out at most once (`NEXT` advances atomically).
unsafe impl Sync for Arena {}

// Not cleared at entry (see link.ld): an allocator hands out uninitialised bytes.
#[link_section = ".noinit"]
static MEMORY: Arena = Arena(UnsafeCell::new([0; ARENA]));
static NEXT: AtomicUsize = AtomicUsize::new(0);

struct Bump;

// SAFETY: `alloc` returns disjoint, suitably aligned ranges inside the arena or null.
unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let base = MEMORY.0.get() as usize;
        let mut current = NEXT.load(Ordering::Relaxed);
        loop {
            let start = (base + current).next_multiple_of(layout.align()) - base;
            let Some(end) = start.checked_add(layout.size()).filter(|&e| e <= ARENA) else {
                return core::ptr::null_mut();
            };
            match NEXT.compare_exchange_weak(current, end, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return (base + start) as *mut u8,
                Err(seen) => current = seen,
            }
        }
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}
}

#[global_allocator]
static ALLOCATOR: Bump = Bump;
