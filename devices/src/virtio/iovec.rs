//! A descriptor chain's buffers as host iovecs, for moving bytes between guest memory and
//! a file descriptor with one `readv`/`writev` and no allocation (the iovec array lives
//! on the stack). Used by the devices that stream to host fds (net, console).

use std::io;
use std::os::fd::RawFd;

use virtio_queue::desc::split::Descriptor;
use vm_memory::bitmap::Bitmap;
use vm_memory::volatile_memory::PtrGuardMut;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, Permissions};

/// Most buffers (after splitting at guest memory region boundaries) one chain may use.
pub const MAX_SEGMENTS: usize = 64;
/// How many leading bytes [`GuestIoVecs::write_prefix`] can reach.
pub const PREFIX_LEN: usize = 16;

/// A chain's buffers as iovecs.
///
/// ```
/// use std::os::unix::net::UnixDatagram;
/// use std::os::fd::AsRawFd;
/// use devices::virtio::iovec::GuestIoVecs;
/// use virtio_queue::desc::split::Descriptor;
/// use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
///
/// let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
/// mem.write_slice(b"hello", GuestAddress(0x100)).unwrap();
/// let chain = [Descriptor::new(0x100, 5, 0, 0)];
/// let mut iov = GuestIoVecs::new();
/// assert!(iov.gather(&mem, chain.into_iter(), false));
/// let (a, b) = UnixDatagram::pair().unwrap();
/// assert_eq!(iov.write_to(a.as_raw_fd()).unwrap(), 5);
/// let mut buf = [0u8; 5];
/// b.recv(&mut buf).unwrap();
/// assert_eq!(&buf, b"hello");
/// ```
pub struct GuestIoVecs {
    iov: [libc::iovec; MAX_SEGMENTS],
    guards: [Option<PtrGuardMut>; MAX_SEGMENTS],
    /// Guest buffers covering the first PREFIX_LEN bytes.
    prefix: [(GuestAddress, u32); PREFIX_LEN],
    prefix_count: usize,
    count: usize,
    len: u64,
}

impl Default for GuestIoVecs {
    fn default() -> Self {
        Self::new()
    }
}

impl GuestIoVecs {
    /// An empty set.
    pub fn new() -> Self {
        GuestIoVecs {
            iov: [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; MAX_SEGMENTS],
            guards: [const { None }; MAX_SEGMENTS],
            prefix: [(GuestAddress(0), 0); PREFIX_LEN],
            prefix_count: 0,
            count: 0,
            len: 0,
        }
    }

    /// Total length of the gathered buffers.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no bytes were gathered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets the gathered buffers.
    pub fn clear(&mut self) {
        for guard in &mut self.guards[..self.count] {
            *guard = None;
        }
        self.count = 0;
        self.prefix_count = 0;
        self.len = 0;
    }

    /// Maps a chain whose buffers are all device-writable (`writable`) or all
    /// device-readable. False for anything malformed: wrong direction, outside guest
    /// memory, more than [`MAX_SEGMENTS`] pieces, or no end (a loop, a bad index, a
    /// 4 GiB overflow: the chain iterator then stops on a descriptor that says "next").
    pub fn gather<G: GuestMemory + ?Sized>(
        &mut self,
        mem: &G,
        chain: impl Iterator<Item = Descriptor>,
        writable: bool,
    ) -> bool {
        self.clear();
        let access = if writable {
            Permissions::Write
        } else {
            Permissions::Read
        };
        let mut last_has_next = true;
        for desc in chain {
            last_has_next = desc.has_next();
            if desc.is_write_only() != writable {
                return false;
            }
            if self.len < PREFIX_LEN as u64 && desc.len() > 0 && self.prefix_count < PREFIX_LEN {
                self.prefix[self.prefix_count] = (desc.addr(), desc.len());
                self.prefix_count += 1;
            }
            let Ok(slices) = mem.get_slices(desc.addr(), desc.len() as usize, access) else {
                return false;
            };
            for slice in slices {
                let Ok(slice) = slice else {
                    return false;
                };
                if self.count == MAX_SEGMENTS {
                    return false;
                }
                if writable {
                    // The fd writes these bytes.
                    slice.bitmap().mark_dirty(0, slice.len());
                }
                let guard = slice.ptr_guard_mut();
                self.iov[self.count] = libc::iovec {
                    iov_base: guard.as_ptr().cast(),
                    iov_len: slice.len(),
                };
                self.guards[self.count] = Some(guard);
                self.count += 1;
            }
            self.len += u64::from(desc.len());
        }
        !last_has_next
    }

    /// Writes `bytes` at `offset` from the start of the gathered buffers (within the first
    /// [`PREFIX_LEN`] bytes; anything beyond is not written).
    pub fn write_prefix<G: GuestMemory + ?Sized>(&self, mem: &G, offset: u64, bytes: &[u8]) {
        let mut at = 0u64;
        for (addr, len) in &self.prefix[..self.prefix_count] {
            for (i, byte) in bytes.iter().enumerate() {
                let want = offset + i as u64;
                if want >= at && want < at + u64::from(*len) {
                    // Inside a buffer `gather` checked.
                    let _ = mem.write_obj(*byte, addr.unchecked_add(want - at));
                }
            }
            at += u64::from(*len);
        }
    }

    /// `readv` from `fd` into the buffers; retries on EINTR.
    pub fn read_from(&self, fd: RawFd) -> io::Result<usize> {
        loop {
            // SAFETY: the first `count` iovecs point into guest memory mapped for as long
            // as the guards in `self.guards` live, which spans the call; `count` is at
            // most MAX_SEGMENTS (64), below IOV_MAX.
            let n = unsafe { libc::readv(fd, self.iov.as_ptr(), self.count as libc::c_int) };
            if n >= 0 {
                // n >= 0 and at most the buffers' length.
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// `writev` the buffers to `fd`; retries on EINTR.
    pub fn write_to(&self, fd: RawFd) -> io::Result<usize> {
        loop {
            // SAFETY: as in `read_from`; writev only reads the buffers.
            let n = unsafe { libc::writev(fd, self.iov.as_ptr(), self.count as libc::c_int) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::test_driver::test_memory;
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};

    const W: u16 = VRING_DESC_F_WRITE as u16;

    #[test]
    fn direction_bounds_and_termination() {
        let mem = test_memory();
        let mut iov = GuestIoVecs::new();
        assert!(iov.gather(&*mem, [Descriptor::new(0x1000, 64, W, 0)].into_iter(), true));
        assert_eq!(iov.len(), 64);
        assert!(!iov.gather(&*mem, [Descriptor::new(0x1000, 64, 0, 0)].into_iter(), true));
        assert!(!iov.gather(
            &*mem,
            [Descriptor::new(0x3f_fff0, 64, W, 0)].into_iter(),
            true
        ));
        // The iterator stopped on a descriptor that still says "next".
        let cut = Descriptor::new(0x1000, 64, W | VRING_DESC_F_NEXT as u16, 1);
        assert!(!iov.gather(&*mem, [cut].into_iter(), true));
        let many = (0..MAX_SEGMENTS as u64 + 1).map(|i| Descriptor::new(0x1000 + i, 1, 0, 0));
        assert!(!iov.gather(&*mem, many, false));
    }

    #[test]
    fn prefix_writes_span_buffers() {
        let mem = test_memory();
        let mut iov = GuestIoVecs::new();
        let chain = [
            Descriptor::new(0x1000, 11, W, 0),
            Descriptor::new(0x2000, 8, W, 0),
        ];
        assert!(iov.gather(&*mem, chain.into_iter(), true));
        iov.write_prefix(&*mem, 10, &[0xaa, 0xbb]);
        let a: u8 = mem.read_obj(GuestAddress(0x100a)).unwrap();
        let b: u8 = mem.read_obj(GuestAddress(0x2000)).unwrap();
        assert_eq!((a, b), (0xaa, 0xbb));
    }
}
