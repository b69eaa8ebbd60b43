//! Reads and writes through io_uring, submitted and completed on the device thread: a
//! batch of chains becomes one `io_uring_enter`, and the host disk completes them into
//! the completion ring, which the device thread reads without a system call (when it
//! busy-polls) or after the ring's eventfd wakes it. No hand-over to a worker thread and
//! back: per request that is two thread wake-ups fewer than [`super::worker_pool`], which
//! still takes what this path cannot (flush, discard, write-zeroes, transfers needing an
//! `O_DIRECT` bounce buffer, and everything where io_uring is unavailable: old kernels,
//! `kernel.io_uring_disabled`, qemu-user).
//!
//! Confinement: the ring is created disabled, knows only the image (a registered file, and
//! every submission must use it), and accepts only `READV` and `WRITEV`
//! (`IORING_REGISTER_RESTRICTIONS`), before it is enabled. io_uring's operations bypass
//! seccomp, so this keeps the device thread's filter meaningful: through the ring it can
//! only read and write its own disk image, and its filter allows only `io_uring_enter`.
//!
//! Completions: the kernel finishes a transfer in its interrupt handler, but posts the
//! completion as task work of the thread that submitted it (the device thread). By default
//! it interrupts that thread with an IPI to do so, 8-13 µs on the development machines'
//! nested virtual CPUs, mostly while the thread busy-polls anyway. So the ring is set up
//! with `COOP_TASKRUN` and `TASKRUN_FLAG` (Linux 5.19; older kernels get the default):
//! no IPI, a flag in the shared submission ring instead, which [`Uring::reap`] checks
//! before it looks for completions, entering the kernel only when work waits. A device
//! thread asleep in `epoll_wait` is still woken to run the work, which signals the eventfd.
//!
//! Guest buffers stay valid while the kernel holds them: each request in flight keeps a
//! guard of guest memory and its iovec array until its completion is reaped, and a reset
//! waits for every request in flight ([`Uring::wait_idle`]).

use std::io;
use std::os::fd::AsRawFd;

use io_uring::{opcode, register::Restriction, squeue, types, IoUring};
use vm_memory::GuestAddressSpace;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::disk::DiskFile;
use super::request::Request;
use super::transfer::{AsyncTransfer, Completion};

/// A request the kernel holds.
struct Pending<M: GuestAddressSpace> {
    queue: u16,
    request: Request,
    /// The buffers the kernel reads or writes: alive until the completion is reaped.
    iovecs: Box<[libc::iovec]>,
    /// Keeps the guest memory behind `iovecs` mapped.
    mem: M::T,
    /// Bytes the transfer moves.
    len: usize,
    write: bool,
}

/// What became of one finished submission.
#[derive(Debug)]
pub enum Reaped {
    /// Done: publish it.
    Done(Completion),
    /// Failed or short: redo it the blocking way (queue, request), which reports a
    /// persistent error.
    Retry(u16, Request),
}

/// The io_uring of one disk.
pub struct Uring<M: GuestAddressSpace> {
    ring: IoUring,
    event: EventFd,
    slots: Vec<Option<Pending<M>>>,
    free: Vec<u32>,
    in_flight: usize,
    /// Submissions pushed but not yet handed to the kernel.
    unsubmitted: bool,
}

// SAFETY: the raw pointers in `Pending::iovecs` point into guest memory kept mapped by the
// `M::T` guard next to them (and into nothing else); they are only handed to the kernel.
// Everything else is owned data, so moving the ring to another thread is sound where the
// guard is `Send`.
unsafe impl<M> Send for Uring<M>
where
    M: GuestAddressSpace,
    M::T: Send,
{
}

impl<M: GuestAddressSpace> std::fmt::Debug for Uring<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uring")
            .field("entries", &self.slots.len())
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl<M: GuestAddressSpace> Uring<M> {
    /// A ring for `disk` with room for `entries` requests in flight, confined to reading and
    /// writing that disk; an error if the kernel has no io_uring (or refuses it).
    pub fn new(disk: &DiskFile, entries: u32) -> io::Result<Self> {
        let ring = match IoUring::builder()
            .setup_r_disabled()
            .dontfork()
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .build(entries)
        {
            Ok(ring) => ring,
            // Before Linux 5.19: completions then interrupt the device thread.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => IoUring::builder()
                .setup_r_disabled()
                .dontfork()
                .build(entries)?,
            Err(e) => return Err(e),
        };
        let event = EventFd::new(EFD_NONBLOCK)?;
        let submitter = ring.submitter();
        submitter.register_files(&[disk.as_raw_fd()])?;
        submitter.register_eventfd(event.as_raw_fd())?;
        let fixed = squeue::Flags::FIXED_FILE.bits();
        submitter.register_restrictions(&mut [
            Restriction::sqe_op(opcode::Readv::CODE),
            Restriction::sqe_op(opcode::Writev::CODE),
            Restriction::sqe_flags_allowed(fixed),
            Restriction::sqe_flags_required(fixed),
        ])?;
        submitter.register_enable_rings()?;
        let slots = (0..entries).map(|_| None).collect();
        Ok(Uring {
            ring,
            event,
            slots,
            free: (0..entries).rev().collect(),
            in_flight: 0,
            unsubmitted: false,
        })
    }

    /// Readable when completions are waiting.
    pub fn event(&self) -> &EventFd {
        &self.event
    }

    /// Requests the kernel holds (submitted or about to be).
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Queues `transfer` of `request` from `queue`, keeping `mem` until it completes; the
    /// request back if the ring is full. [`Uring::submit`] hands it to the kernel.
    pub fn push(
        &mut self,
        queue: u16,
        request: Request,
        transfer: AsyncTransfer,
        mem: M::T,
    ) -> Result<(), Request> {
        let Some(slot) = self.free.pop() else {
            return Err(request);
        };
        let AsyncTransfer {
            iovecs,
            offset,
            write,
        } = transfer;
        let len = iovecs.iter().map(|v| v.iov_len).sum();
        let iovecs = iovecs.into_boxed_slice();
        // At most IOV_MAX iovecs (`AsyncTransfer`'s promise).
        let count = iovecs.len() as u32;
        let file = types::Fixed(0);
        let entry = if write {
            opcode::Writev::new(file, iovecs.as_ptr(), count)
                .offset(offset)
                .build()
        } else {
            opcode::Readv::new(file, iovecs.as_ptr(), count)
                .offset(offset)
                .build()
        }
        .user_data(u64::from(slot));
        // SAFETY: the iovecs and the guest memory they describe stay alive in the slot
        // (boxed: moving the box does not move the array) until the completion for this
        // user_data is reaped in `reap`, or the ring is waited idle before it is dropped.
        let pushed = unsafe { self.ring.submission().push(&entry) };
        if pushed.is_err() {
            self.free.push(slot);
            return Err(request);
        }
        self.slots[slot as usize] = Some(Pending {
            queue,
            request,
            iovecs,
            mem,
            len,
            write,
        });
        self.in_flight += 1;
        self.unsubmitted = true;
        Ok(())
    }

    /// Hands what [`Uring::push`] queued to the kernel (one system call for the batch).
    pub fn submit(&mut self) -> io::Result<()> {
        if !std::mem::take(&mut self.unsubmitted) {
            return Ok(());
        }
        loop {
            match self.ring.submit() {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                // The kernel is short of memory for the batch: what it did not take stays
                // queued for the next submit.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EBUSY)) => {
                    self.unsubmitted = true;
                    return Ok(());
                }
                Err(e) => {
                    self.unsubmitted = true;
                    return Err(e);
                }
            }
        }
    }

    /// Takes every finished request off the completion ring, calling `done` for each.
    /// Returns how many there were.
    pub fn reap(&mut self, mut done: impl FnMut(Reaped)) -> usize {
        let mut n = 0;
        if self.in_flight > 0 && self.ring.submission().taskrun() {
            // Finished transfers wait for this thread to post their completions (see
            // "Completions" above): enter the kernel to let it. A failure leaves them for
            // the next look, or for the eventfd wake-up of a blocking wait.
            let _ = self.ring.submit();
        }
        // The completion ring is read without a system call; collect first, so `done`
        // may touch `self` afterwards.
        let finished: Vec<(u64, i32)> = self
            .ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (user_data, result) in finished {
            let Some(pending) = usize::try_from(user_data)
                .ok()
                .and_then(|i| self.slots.get_mut(i))
                .and_then(Option::take)
            else {
                continue;
            };
            // `user_data` is a slot index below `entries`, a u32.
            self.free.push(user_data as u32);
            self.in_flight -= 1;
            n += 1;
            // The kernel is done with the buffers.
            drop(pending.iovecs);
            let complete = usize::try_from(result).is_ok_and(|moved| moved == pending.len);
            done(if complete {
                Reaped::Done(Completion::finished(
                    pending.queue,
                    pending.request,
                    &*pending.mem,
                    pending.write,
                ))
            } else {
                Reaped::Retry(pending.queue, pending.request)
            });
        }
        n
    }

    /// Waits until the kernel holds no request (a reset: the driver may reuse the buffers
    /// afterwards) and drops their results.
    pub fn wait_idle(&mut self) {
        let _ = self.submit();
        let mut warned = false;
        while self.in_flight > 0 {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => {
                    // Cannot wait (not on a working ring): looking at the completion ring
                    // until the kernel is done is the only safe way left.
                    if !std::mem::replace(&mut warned, true) {
                        tracing::warn!(error = %e, "io_uring wait failed during reset");
                    }
                    std::thread::yield_now();
                }
            }
            self.reap(|_| {});
        }
        let _ = self.event.read();
    }
}

impl<M: GuestAddressSpace> Drop for Uring<M> {
    fn drop(&mut self) {
        // The kernel must be done with every buffer before the slots go.
        self.wait_idle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
    use vmm_sys_util::tempfile::TempFile;

    use crate::virtio::block::request::{RequestKind, Segment};
    use crate::virtio::block::transfer::plan_async;
    use crate::virtio::block::CacheMode;

    type Mem = Arc<GuestMemoryMmap>;

    /// A 64 KiB image of byte `i % 251` and a ring over it, or `None` where the kernel (or
    /// qemu-user) has no io_uring: the workers then do everything, as tested elsewhere.
    fn ring() -> Option<(TempFile, DiskFile, Uring<Mem>, Mem)> {
        let file = TempFile::new().unwrap();
        let data: Vec<u8> = (0..64 << 10).map(|i| (i % 251) as u8).collect();
        std::fs::write(file.as_path(), &data).unwrap();
        let disk = DiskFile::open(file.as_path(), false, Some(CacheMode::Writeback)).unwrap();
        let uring = match Uring::new(&disk, 8) {
            Ok(u) => u,
            Err(e) => {
                eprintln!("no io_uring here ({e}): skipping the ring's own checks");
                return None;
            }
        };
        let mem = Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap());
        Some((file, disk, uring, mem))
    }

    /// A read of `len` bytes at `sector` into guest memory at `addr`, planned as the
    /// device plans it (the range itself is not checked against the image here).
    fn read(
        disk: &DiskFile,
        mem: &Mem,
        addr: u64,
        len: u32,
        sector: u64,
    ) -> (Request, AsyncTransfer) {
        let request = Request {
            head: 3,
            kind: RequestKind::In { sector },
            data: vec![Segment {
                addr: GuestAddress(addr),
                len,
            }],
            data_len: u64::from(len),
            status: GuestAddress(0xf_0000),
        };
        let transfer = plan_async(disk, &**mem, &request).expect("a plain read");
        (request, transfer)
    }

    /// Waits (bounded) for `n` completions.
    fn reap_all(uring: &mut Uring<Mem>, n: usize) -> Vec<Reaped> {
        let mut got = Vec::new();
        for _ in 0..1000 {
            uring.reap(|r| got.push(r));
            if got.len() >= n {
                break;
            }
            let _ = uring.ring.submit_and_wait(1);
        }
        assert_eq!(got.len(), n, "completions never came");
        got
    }

    #[test]
    fn reads_complete_in_one_batch_and_mark_the_slots_free() {
        let Some((_file, disk, mut uring, mem)) = ring() else {
            return;
        };
        for i in 0..8u64 {
            let (request, transfer) = read(&disk, &mem, 0x1000 * i, 512, i);
            uring
                .push(0, request, transfer, mem.clone())
                .expect("room for 8");
        }
        // A ninth does not fit: it comes back for the workers.
        let (request, transfer) = read(&disk, &mem, 0x9000, 512, 9);
        assert!(uring.push(0, request, transfer, mem.clone()).is_err());
        assert_eq!(uring.in_flight(), 8);
        uring.submit().unwrap();
        let done = reap_all(&mut uring, 8);
        assert_eq!(uring.in_flight(), 0);
        for r in done {
            let Reaped::Done(c) = r else {
                panic!("a read within the image failed: {r:?}");
            };
            assert_eq!((c.head, c.status, c.used_len), (3, 0, 513));
        }
        for i in 0..8u64 {
            let mut got = [0u8; 512];
            mem.read_slice(&mut got, GuestAddress(0x1000 * i)).unwrap();
            let want: Vec<u8> = (0..512).map(|k| ((i * 512 + k) % 251) as u8).collect();
            assert_eq!(got.to_vec(), want);
        }
        // The slots are free again.
        let (request, transfer) = read(&disk, &mem, 0, 512, 0);
        assert!(uring.push(0, request, transfer, mem.clone()).is_ok());
        uring.wait_idle();
        assert_eq!(uring.in_flight(), 0);
    }

    #[test]
    fn a_short_transfer_goes_back_for_a_blocking_retry() {
        let Some((_file, disk, mut uring, mem)) = ring() else {
            return;
        };
        // Past the end of the 64 KiB image: the kernel reads nothing.
        let (request, transfer) = read(&disk, &mem, 0, 512, 200);
        uring.push(0, request, transfer, mem.clone()).unwrap();
        uring.submit().unwrap();
        let done = reap_all(&mut uring, 1);
        assert!(matches!(done[0], Reaped::Retry(0, Request { head: 3, .. })));
    }

    #[test]
    fn the_ring_refuses_other_operations_and_files() {
        let Some((_file, _disk, mut uring, _mem)) = ring() else {
            return;
        };
        let other = TempFile::new().unwrap();
        let entries = [
            // Not READV or WRITEV.
            opcode::Nop::new().build().user_data(100),
            opcode::Fsync::new(types::Fixed(0)).build().user_data(101),
            // READV of a file that is not the registered image.
            opcode::Readv::new(types::Fd(other.as_file().as_raw_fd()), std::ptr::null(), 0)
                .build()
                .user_data(102),
        ];
        let mut refused = 0;
        for e in &entries {
            // SAFETY: none of them points at memory (a zero-length iovec array).
            unsafe { uring.ring.submission().push(e).unwrap() };
            // One at a time: the kernel stops a batch at the first refused entry.
            match uring.ring.submit_and_wait(1) {
                Ok(_) => {
                    for c in uring.ring.completion() {
                        assert_eq!(c.result(), -libc::EACCES, "user_data {}", c.user_data());
                        refused += 1;
                    }
                }
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(libc::EACCES));
                    refused += 1;
                }
            }
        }
        assert_eq!(refused, entries.len());
    }
}
