//! Executing a validated request against the image: the blocking way (an I/O worker:
//! [`execute`]) and the non-blocking way (the device thread: [`try_execute_nowait`], data in
//! the host page cache). Both read and write guest memory in place through iovecs over it;
//! only an `O_DIRECT` transfer whose guest buffers break the file system's alignment goes
//! through an aligned bounce buffer.

use std::io;

use vm_memory::bitmap::{Bitmap, BitmapSlice, BS};
use vm_memory::{GuestAddress, GuestMemory, Permissions, VolatileSlice};

use super::disk::{DirectAlign, DiskFile, IOV_MAX};
use super::request::{Request, RequestKind, Segment, SECTOR_SHIFT, STATUS_IOERR, STATUS_OK};

/// A finished request, for the device thread to publish in the used ring.
#[derive(Debug)]
pub struct Completion {
    /// Queue the request came from.
    pub queue: u16,
    /// Descriptor chain head.
    pub head: u16,
    /// Where the status byte goes.
    pub status_addr: GuestAddress,
    /// Request status.
    pub status: u8,
    /// Bytes written into the chain (data for reads, plus the status byte).
    pub used_len: u32,
    /// The request, for metrics.
    pub kind: RequestKind,
    /// Data bytes transferred.
    pub bytes: u64,
}

impl Completion {
    /// A read or write the kernel finished in full elsewhere (io_uring): marks the guest
    /// pages a read wrote dirty, as [`execute`] does.
    pub(super) fn finished<G: GuestMemory + ?Sized>(
        queue: u16,
        request: Request,
        mem: &G,
        write: bool,
    ) -> Self {
        if !write {
            // The buffers were checked to be guest memory when the transfer was planned.
            let _ = with_iovecs(mem, &request.data, Permissions::Write, |_, _| Ok(()));
        }
        Completion::new(queue, request, Ok(()))
    }

    fn new(queue: u16, request: Request, result: io::Result<()>) -> Self {
        let (status, used_len, bytes) = match result {
            Ok(()) => {
                let written = match request.kind {
                    // Parsing bounded the chain to 4 GiB, and the status byte is part of it.
                    RequestKind::In { .. } => request.data_len as u32,
                    _ => 0,
                };
                (STATUS_OK, written.saturating_add(1), request.data_len)
            }
            Err(e) => {
                // Per request, so at trace level; io_errors counts them.
                tracing::trace!(error = %e, head = request.head, "Block request failed");
                (STATUS_IOERR, 1, 0)
            }
        };
        Completion {
            queue,
            head: request.head,
            status_addr: request.status,
            status,
            used_len,
            kind: request.kind,
            bytes,
        }
    }
}

/// Runs `f` with the guest memory of `segments` as slices and as iovecs over them, or fails
/// if any part of them is not guest memory. Guest pages written are marked dirty when `f`
/// succeeds with `Permissions::Write`.
fn with_iovecs<'a, G, R>(
    mem: &'a G,
    segments: &[Segment],
    access: Permissions,
    f: impl FnOnce(&[VolatileSlice<'a, BS<'a, G::Bitmap>>], &mut [libc::iovec]) -> io::Result<R>,
) -> io::Result<R>
where
    G: GuestMemory + ?Sized,
{
    let mut slices = Vec::with_capacity(segments.len());
    for seg in segments {
        let iter = mem
            .get_slices(seg.addr, seg.len as usize, access)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        for slice in iter {
            slices.push(slice.map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?);
        }
    }
    let covered: usize = slices.iter().map(|s| s.len()).sum();
    let wanted: u64 = segments.iter().map(|s| u64::from(s.len)).sum();
    if covered as u64 != wanted {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "buffer not entirely in guest memory",
        ));
    }
    let guards: Vec<_> = slices.iter().map(|s| s.ptr_guard_mut()).collect();
    let mut iovecs: Vec<libc::iovec> = guards
        .iter()
        .map(|g| libc::iovec {
            iov_base: g.as_ptr().cast(),
            iov_len: g.len(),
        })
        .collect();
    let result = f(&slices, &mut iovecs);
    if access == Permissions::Write && result.is_ok() {
        for slice in &slices {
            slice.bitmap().mark_dirty(0, slice.len());
        }
    }
    drop(guards);
    result
}

/// An `O_DIRECT`-aligned buffer of `len` bytes.
struct Bounce {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl Bounce {
    fn new(len: usize, align: usize) -> Self {
        let storage = vec![0u8; len + align];
        let start = storage.as_ptr().align_offset(align);
        Bounce {
            storage,
            start,
            len,
        }
    }

    fn bytes(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

/// Checks an `O_DIRECT` transfer of `len` bytes at `offset`: `Ok(true)` when the guest
/// buffers must be bounced. A range the file system cannot transfer directly fails (a
/// driver that honours the advertised block size never asks for one).
fn direct_plan(align: DirectAlign, iovecs: &[libc::iovec], offset: u64) -> io::Result<bool> {
    let len: usize = iovecs.iter().map(|v| v.iov_len).sum();
    if !align.range_aligned(offset, len as u64) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "range not aligned to the O_DIRECT block size",
        ));
    }
    Ok(!align.memory_aligned(iovecs))
}

/// Which way a transfer goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Disk to guest memory.
    Read,
    /// Guest memory to disk.
    Write,
}

/// Transfers between the disk at `offset` and guest memory (`slices`, and `iovecs` over
/// them), through a bounce buffer where `O_DIRECT` needs one.
fn transfer_at<B: BitmapSlice>(
    disk: &DiskFile,
    direction: Direction,
    slices: &[VolatileSlice<'_, B>],
    iovecs: &mut [libc::iovec],
    offset: u64,
) -> io::Result<()> {
    let bounce_align = match disk.direct_align() {
        Some(align) if direct_plan(align, iovecs, offset)? => Some(align.memory),
        _ => None,
    };
    let Some(align) = bounce_align else {
        return match direction {
            // SAFETY: the iovecs cover guest memory slices that stay mapped while their
            // guards live (for the whole call, see `with_iovecs`); the guest may race on the
            // contents, which is its own business, but the memory is valid and writable.
            Direction::Read => unsafe { disk.read_vectored_at(iovecs, offset) },
            // SAFETY: as above; pwritev only reads the guest memory.
            Direction::Write => unsafe { disk.write_vectored_at(iovecs, offset) },
        };
    };
    let len = slices.iter().map(|s| s.len()).sum();
    let mut bounce = Bounce::new(len, align);
    let bytes = bounce.bytes();
    if direction == Direction::Write {
        let mut done = 0;
        for slice in slices {
            slice.copy_to(&mut bytes[done..done + slice.len()]);
            done += slice.len();
        }
    }
    let mut one = [libc::iovec {
        iov_base: bytes.as_mut_ptr().cast(),
        iov_len: bytes.len(),
    }];
    match direction {
        // SAFETY: the iovec covers `bytes`, alive and unaliased for the call.
        Direction::Read => unsafe { disk.read_vectored_at(&mut one, offset)? },
        // SAFETY: as above; pwritev only reads it.
        Direction::Write => unsafe { disk.write_vectored_at(&mut one, offset)? },
    }
    if direction == Direction::Read {
        let mut done = 0;
        for slice in slices {
            slice.copy_from(&bytes[done..done + slice.len()]);
            done += slice.len();
        }
    }
    Ok(())
}

fn run<G: GuestMemory + ?Sized>(disk: &DiskFile, mem: &G, request: &Request) -> io::Result<()> {
    match &request.kind {
        RequestKind::In { sector } => {
            with_iovecs(mem, &request.data, Permissions::Write, |slices, iov| {
                transfer_at(disk, Direction::Read, slices, iov, sector << SECTOR_SHIFT)
            })
        }
        RequestKind::Out { sector } => {
            with_iovecs(mem, &request.data, Permissions::Read, |slices, iov| {
                transfer_at(disk, Direction::Write, slices, iov, sector << SECTOR_SHIFT)
            })
        }
        RequestKind::Flush => disk.flush(),
        RequestKind::Discard(ranges) => ranges.iter().try_for_each(|r| {
            disk.discard(
                r.sector << SECTOR_SHIFT,
                u64::from(r.sectors) << SECTOR_SHIFT,
            )
        }),
        RequestKind::WriteZeroes(ranges) => ranges.iter().try_for_each(|r| {
            disk.write_zeroes(
                r.sector << SECTOR_SHIFT,
                u64::from(r.sectors) << SECTOR_SHIFT,
                r.unmap,
            )
        }),
        // Answered by the device thread from memory; never submitted.
        RequestKind::GetId => Err(io::Error::from(io::ErrorKind::Unsupported)),
    }
}

/// A read or write ready to be handed to the kernel as it is (io_uring): iovecs over guest
/// memory, at most `IOV_MAX` of them, aligned as `O_DIRECT` wants where it applies.
#[derive(Debug)]
pub struct AsyncTransfer {
    /// The guest buffers.
    pub iovecs: Vec<libc::iovec>,
    /// Byte offset in the image.
    pub offset: u64,
    /// Guest memory to the disk (else the disk to guest memory).
    pub write: bool,
}

/// Plans `request` as an [`AsyncTransfer`], or `None` when it must take the blocking way:
/// not a read or write, buffers outside guest memory, more than `IOV_MAX` of them, or an
/// `O_DIRECT` transfer that needs a bounce buffer or is refused (the blocking way reports
/// the error).
pub fn plan_async<G: GuestMemory + ?Sized>(
    disk: &DiskFile,
    mem: &G,
    request: &Request,
) -> Option<AsyncTransfer> {
    let (sector, write, access) = match request.kind {
        RequestKind::In { sector } => (sector, false, Permissions::Write),
        RequestKind::Out { sector } => (sector, true, Permissions::Read),
        _ => return None,
    };
    let offset = sector << SECTOR_SHIFT;
    let iovecs = with_iovecs(mem, &request.data, access, |_, iov| Ok(iov.to_vec())).ok()?;
    if iovecs.is_empty() || iovecs.len() > IOV_MAX {
        return None;
    }
    if let Some(align) = disk.direct_align() {
        if direct_plan(align, &iovecs, offset).ok()? {
            return None;
        }
    }
    Some(AsyncTransfer {
        iovecs,
        offset,
        write,
    })
}

/// Executes `request` from `queue`, blocking as long as the disk takes.
pub fn execute<G: GuestMemory + ?Sized>(
    disk: &DiskFile,
    mem: &G,
    queue: u16,
    request: Request,
) -> Completion {
    let result = run(disk, mem, &request);
    Completion::new(queue, request, result)
}

/// Executes a read or write without blocking, if the host page cache allows
/// (`RWF_NOWAIT`): the completion, or the request back for a worker.
pub fn try_execute_nowait<G: GuestMemory + ?Sized>(
    disk: &DiskFile,
    mem: &G,
    queue: u16,
    request: Request,
) -> Result<Completion, Request> {
    let done = match request.kind {
        RequestKind::In { sector } => {
            with_iovecs(mem, &request.data, Permissions::Write, |_, iov| {
                // SAFETY: as in `transfer_at`.
                Ok(unsafe { disk.try_read_vectored_at(iov, sector << SECTOR_SHIFT) })
            })
        }
        RequestKind::Out { sector } => {
            with_iovecs(mem, &request.data, Permissions::Read, |_, iov| {
                // SAFETY: as in `transfer_at`; pwritev2 only reads the guest memory.
                Ok(unsafe { disk.try_write_vectored_at(iov, sector << SECTOR_SHIFT) })
            })
        }
        _ => Ok(false),
    };
    match done {
        Ok(true) => Ok(Completion::new(queue, request, Ok(()))),
        // Would block, or the buffers are not all guest memory: the worker's blocking
        // attempt reports the error.
        Ok(false) | Err(_) => Err(request),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iov(addr: usize, len: usize) -> libc::iovec {
        libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: len,
        }
    }

    #[test]
    fn direct_transfers_bounce_unaligned_memory_and_refuse_unaligned_ranges() {
        let align = DirectAlign {
            memory: 512,
            offset: 4096,
        };
        // Aligned: straight through.
        let aligned = [iov(0x10_0000, 4096), iov(0x20_0200, 4096)];
        assert!(!direct_plan(align, &aligned, 8192).unwrap());
        // An address or a length off the memory alignment: bounce.
        assert!(direct_plan(align, &[iov(0x10_0003, 4096)], 0).unwrap());
        assert!(direct_plan(align, &[iov(0x10_0000, 1000), iov(0x20_0000, 3096)], 0).unwrap());
        // A range off the block size (a 512-byte sector of a 4 KiB-block disk): refused.
        assert!(direct_plan(align, &[iov(0x10_0000, 512)], 0).is_err());
        assert!(direct_plan(align, &aligned, 512).is_err());
    }

    #[test]
    fn bounce_buffers_are_aligned() {
        for align in [512, 4096] {
            let mut b = Bounce::new(1000, align);
            let bytes = b.bytes();
            assert_eq!(bytes.len(), 1000);
            assert_eq!(bytes.as_ptr() as usize % align, 0);
        }
    }
}
