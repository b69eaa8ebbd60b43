//! The device-thread side of virtio-blk: popping chains when the driver kicks, refusing
//! bad ones on the spot, serving reads and writes whose data is in the host page cache at
//! once (they cannot block: `RWF_NOWAIT`), handing the rest to the workers, and publishing
//! completions: one used-ring pass and at most one interrupt per batch, as EVENT_IDX asks.

use std::sync::Arc;

use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemory};

use super::device::BlockDevice;
use super::disk::DiskFile;
use super::metrics::BlockMetrics;
use super::request::{Request, RequestError, RequestKind, STATUS_IOERR, STATUS_OK};
use super::transfer::{plan_async, try_execute_nowait, Completion};
use super::uring::{Reaped, Uring};
use super::worker_pool::WorkerPool;
use crate::virtio::active_queues::ChainOutcome;
use crate::virtio::Progress;

/// Writes a request's status byte, if it has one.
fn write_status<G: GuestMemory>(mem: &G, status_addr: Option<GuestAddress>, status: u8) {
    if let Some(addr) = status_addr {
        // Parsing checked the status byte is writable guest memory.
        let _ = mem.write_obj(status, addr);
    }
}

fn count_refusal(metrics: &BlockMetrics, error: &RequestError) {
    match error {
        RequestError::Unsupported(_) => metrics.unsupported_requests.inc(),
        _ => metrics.invalid_requests.inc(),
    }
}

/// Writes the serial into a GET_ID request's buffers; returns the bytes written.
fn write_serial<G: GuestMemory>(mem: &G, request: &Request, serial: &[u8]) -> u32 {
    let mut done = 0usize;
    for seg in &request.data {
        if done == serial.len() {
            break;
        }
        let n = (serial.len() - done).min(seg.len as usize);
        if mem.write_slice(&serial[done..done + n], seg.addr).is_err() {
            break;
        }
        done += n;
    }
    // At most ID_BYTES.
    done as u32
}

/// Starts a validated request: answered at once (GET_ID, writes to a read-only disk, data
/// in the page cache) as `Some((status address, status, used length))`, or handed to the
/// workers (`None`).
fn start<M, G>(
    device: &mut BlockDeviceParts<'_, M>,
    space: &M,
    index: usize,
    request: Request,
    mem: &G,
) -> Option<(Option<GuestAddress>, u8, u32)>
where
    M: GuestAddressSpace + Send + 'static,
    G: GuestMemory,
{
    let writes = matches!(
        request.kind,
        RequestKind::Out { .. } | RequestKind::Discard(_) | RequestKind::WriteZeroes(_)
    );
    if writes && device.disk.read_only() {
        device.metrics.read_only_violations.inc();
        return Some((Some(request.status), STATUS_IOERR, 1));
    }
    if request.kind == RequestKind::GetId {
        device.metrics.get_id_ops.inc();
        let written = write_serial(mem, &request, device.serial);
        return Some((Some(request.status), STATUS_OK, written + 1));
    }
    // `index` < number of queues (1).
    let queue = index as u16;
    let request = match request.kind {
        RequestKind::In { .. } | RequestKind::Out { .. } if device.disk.may_try_nowait(writes) => {
            match try_execute_nowait(device.disk, mem, queue, request) {
                Ok(done) => {
                    device.metrics.nowait_hits.inc();
                    account(device.metrics, &done);
                    return Some((Some(done.status_addr), done.status, done.used_len));
                }
                Err(request) => {
                    device.metrics.nowait_misses.inc();
                    request
                }
            }
        }
        _ => request,
    };
    let request = match (&mut device.uring, plan_async(device.disk, mem, &request)) {
        (Some(uring), Some(transfer)) => {
            match uring.push(queue, request, transfer, space.memory()) {
                Ok(()) => {
                    device.metrics.uring_ops.inc();
                    return None;
                }
                Err(request) => request,
            }
        }
        _ => request,
    };
    device.pool.submit(queue, request, space.clone());
    None
}

/// The parts of the device `start` needs while the queue is borrowed.
struct BlockDeviceParts<'a, M: GuestAddressSpace> {
    disk: &'a DiskFile,
    serial: &'a [u8],
    metrics: &'a BlockMetrics,
    pool: &'a WorkerPool<M>,
    uring: Option<&'a mut Uring<M>>,
}

impl<M> BlockDevice<M>
where
    M: GuestAddressSpace + Send + 'static,
{
    /// Processes everything the driver made available on queue `index`; true if it took
    /// any chain. With `max_in_flight` requests at the host it leaves the rest in the
    /// ring until completions come in.
    pub(super) fn handle_queue(&mut self, index: usize) -> bool {
        let mut parts = BlockDeviceParts {
            disk: &self.disk,
            serial: &self.serial,
            metrics: &self.metrics,
            pool: &self.pool,
            uring: self.uring.as_mut(),
        };
        let Some(active) = self.core.state.active_mut() else {
            return false;
        };
        let space = active.mem.clone();
        let max_in_flight = self.max_in_flight;
        let mut outstanding = self.outstanding;
        let mut throttled = false;
        let drained = active.drain(index, |mem, chain| {
            if outstanding >= max_in_flight {
                throttled = true;
                return ChainOutcome::Stop;
            }
            let head = chain.head_index();
            let (status_addr, status, used_len) = match Request::parse(chain, &self.limits) {
                Ok(request) => match start(&mut parts, &space, index, request, mem) {
                    Some(done) => done,
                    None => {
                        outstanding += 1;
                        return ChainOutcome::Kept;
                    }
                },
                Err(failure) => {
                    count_refusal(&self.metrics, &failure.error);
                    if let Some(suppressed) = self.core.log.allow() {
                        tracing::warn!(disk = %self.id, head, error = %failure.error, suppressed, "Refusing virtio-blk request");
                    }
                    let used_len = u32::from(failure.status.is_some());
                    (failure.status, failure.error.status(), used_len)
                }
            };
            write_status(mem, status_addr, status);
            ChainOutcome::Used(used_len)
        });
        active.settle(index, drained, &*self.metrics, &mut self.core.log);
        self.throttled = throttled;
        self.outstanding = outstanding;
        self.submit_uring();
        drained.took
    }

    /// Hands the reads and writes queued on the io_uring to the kernel, as one batch.
    fn submit_uring(&mut self) {
        let Some(uring) = &mut self.uring else {
            return;
        };
        if let Err(e) = uring.submit() {
            // They stay queued; the next pass (or a reset) submits them again.
            if let Some(suppressed) = self.core.log.allow() {
                tracing::warn!(disk = %self.id, error = %e, suppressed, "io_uring submission failed");
            }
        }
    }

    /// Busy polling: looks at the rings and the workers once, without waiting.
    pub(super) fn poll_once(&mut self) -> Progress {
        let completions = self.publish_completions();
        let pending = self
            .core
            .state
            .active_mut()
            .is_some_and(|active| active.pending());
        let requests = pending && self.handle_queue(0);
        if requests {
            self.metrics.polled_batches.inc();
        }
        Progress {
            requests,
            completions,
            in_flight: self.outstanding > 0,
        }
    }

    /// Publishes finished requests (io_uring's and the workers') and signals the queues
    /// that got some; true if there were any.
    pub(super) fn publish_completions(&mut self) -> bool {
        let metrics: Arc<BlockMetrics> = self.metrics.clone();
        let Some(active) = self.core.state.active_mut() else {
            // Reset raced with the workers: drain() already discarded their results.
            while self.pool.next_completion().is_some() {}
            return false;
        };
        let mut finished = Vec::new();
        if let Some(uring) = &mut self.uring {
            uring.reap(|reaped| match reaped {
                Reaped::Done(c) => finished.push(c),
                Reaped::Retry(queue, request) => {
                    metrics.uring_retries.inc();
                    self.pool.submit(queue, request, active.mem.clone());
                }
            });
        }
        let mut signal = vec![false; active.queues.len()];
        let mut corrupted = false;
        let mut any = !finished.is_empty();
        {
            let mem = active.mem.memory();
            let from_workers = std::iter::from_fn(|| self.pool.next_completion());
            for c in finished.into_iter().chain(from_workers) {
                any = true;
                self.outstanding = self.outstanding.saturating_sub(1);
                account(&metrics, &c);
                if active.broken || corrupted {
                    continue;
                }
                let index = usize::from(c.queue);
                let Some(queue) = active.queues.get_mut(index) else {
                    continue;
                };
                write_status(&*mem, Some(c.status_addr), c.status);
                if queue.add_used(&*mem, c.head, c.used_len).is_ok() {
                    signal[index] = true;
                } else {
                    corrupted = true;
                }
            }
        }
        if corrupted {
            active.needs_reset("used ring unwritable", &*metrics, &mut self.core.log);
            return any;
        }
        for (index, _) in signal.iter().enumerate().filter(|(_, s)| **s) {
            active.notify(index, &*metrics, &mut self.core.log);
        }
        // Room at the host again: take the chains left in the ring.
        if any && self.throttled {
            self.handle_queue(0);
        }
        any
    }
}

fn account(metrics: &BlockMetrics, c: &Completion) {
    if c.status != STATUS_OK {
        metrics.io_errors.inc();
        return;
    }
    match c.kind {
        RequestKind::In { .. } => {
            metrics.read_ops.inc();
            metrics.read_bytes.add(c.bytes);
        }
        RequestKind::Out { .. } => {
            metrics.write_ops.inc();
            metrics.write_bytes.add(c.bytes);
        }
        RequestKind::Flush => metrics.flush_ops.inc(),
        RequestKind::Discard(_) => metrics.discard_ops.inc(),
        RequestKind::WriteZeroes(_) => metrics.write_zeroes_ops.inc(),
        RequestKind::GetId => metrics.get_id_ops.inc(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::os::fd::AsRawFd;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    use virtio_bindings::virtio_blk::*;
    use virtio_bindings::virtio_ring::{
        VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VRING_USED_F_NO_NOTIFY,
    };
    use virtio_queue::desc::split::{Descriptor, VirtqUsedElem};
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::Queue;
    use vm_memory::GuestMemoryMmap;
    use vmm_sys_util::tempfile::TempFile;

    use crate::virtio::block::request::WRITE_ZEROES_FLAG_UNMAP;
    use crate::virtio::block::{BlockConfig, BlockDevice, CacheMode, SECTOR_SIZE};
    use crate::virtio::{features, Activation, VirtioDevice, VirtioInterrupt, VirtioInterruptType};

    type Mem = Arc<GuestMemoryMmap>;
    const DISK_SECTORS: u64 = 64;
    const QUEUE_LEN: u16 = 16;
    const DESC_TABLE: u64 = 0x0;
    const AVAIL: u64 = 0x1000;
    const USED: u64 = 0x2000;
    const HDR: u64 = 0x10_0000;
    const DATA: u64 = 0x20_0000;
    const STATUS: u64 = 0x30_0000;

    #[derive(Default)]
    struct Interrupts {
        queue: Mutex<Vec<u16>>,
        needs_reset: AtomicBool,
    }

    impl VirtioInterrupt for Interrupts {
        fn trigger(&self, kind: VirtioInterruptType) -> std::io::Result<()> {
            if let VirtioInterruptType::Queue(q) = kind {
                self.queue.lock().unwrap().push(q);
            }
            Ok(())
        }
        fn set_needs_reset(&self) {
            self.needs_reset.store(true, Ordering::SeqCst);
        }
    }

    struct Harness {
        mem: Mem,
        device: BlockDevice<Mem>,
        interrupts: Arc<Interrupts>,
        file: TempFile,
        submitted: u16,
    }

    impl Harness {
        /// A disk opened with O_DIRECT: every request goes through the workers.
        fn new(read_only: bool, event_idx: bool) -> Self {
            Self::with_cache(read_only, event_idx, CacheMode::None)
        }

        fn with_cache(read_only: bool, event_idx: bool, cache: CacheMode) -> Self {
            Self::build(read_only, event_idx, cache, true)
        }

        fn build(read_only: bool, event_idx: bool, cache: CacheMode, io_uring: bool) -> Self {
            let file = TempFile::new().unwrap();
            file.as_file().set_len(DISK_SECTORS * SECTOR_SIZE).unwrap();
            let mem: Mem =
                Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap());
            let mut device = BlockDevice::new(BlockConfig {
                id: "test".into(),
                path: file.as_path().to_path_buf(),
                read_only,
                serial: Some("SERIAL-0123456789ABC".into()),
                cache: Some(cache),
                workers: 2,
                worker_init: None,
                io_uring,
            })
            .unwrap();
            let interrupts = Arc::new(Interrupts::default());
            // The driver's side of the rings, laid out as the virtio spec says.
            let mut queue = Queue::new(QUEUE_LEN).unwrap();
            queue.set_size(QUEUE_LEN);
            queue.set_desc_table_address(Some(DESC_TABLE as u32), Some(0));
            queue.set_avail_ring_address(Some(AVAIL as u32), Some(0));
            queue.set_used_ring_address(Some(USED as u32), Some(0));
            queue.set_ready(true);
            queue.set_event_idx(event_idx);
            assert!(queue.is_valid(&*mem));
            let interrupt: Arc<dyn VirtioInterrupt> = interrupts.clone();
            device
                .activate(Activation {
                    mem: mem.clone(),
                    interrupt,
                    queues: vec![queue],
                    acked_features: features::VERSION_1,
                })
                .unwrap();
            Harness {
                mem,
                device,
                interrupts,
                file,
                submitted: 0,
            }
        }

        /// Makes a chain of (addr, len, device-writable) descriptors available at slot 0.
        fn submit(&mut self, descs: &[(u64, u32, bool)]) {
            let raw: Vec<RawDescriptor> = descs
                .iter()
                .enumerate()
                .map(|(i, (addr, len, write))| {
                    let mut flags = if *write { VRING_DESC_F_WRITE as u16 } else { 0 };
                    if i + 1 < descs.len() {
                        flags |= VRING_DESC_F_NEXT as u16;
                    }
                    RawDescriptor::from(Descriptor::new(*addr, *len, flags, i as u16 + 1))
                })
                .collect();
            self.submit_raw(&raw, 0);
        }

        /// Writes descriptors at table index 0.. and publishes `head`.
        fn submit_raw(&mut self, raw: &[RawDescriptor], head: u16) {
            self.write_descriptors(0, raw);
            self.offer(head);
            self.publish();
        }

        /// Writes `raw` into the descriptor table from index `first` on.
        fn write_descriptors(&self, first: u16, raw: &[RawDescriptor]) {
            for (i, d) in raw.iter().enumerate() {
                let at = DESC_TABLE + 16 * (u64::from(first) + i as u64);
                self.mem.write_obj(*d, GuestAddress(at)).unwrap();
            }
        }

        /// Puts `head` in the next slot of the available ring (not yet published).
        fn offer(&mut self, head: u16) {
            let slot = u64::from(self.submitted % QUEUE_LEN);
            self.mem
                .write_obj(head.to_le(), GuestAddress(AVAIL + 4 + 2 * slot))
                .unwrap();
            self.submitted = self.submitted.wrapping_add(1);
        }

        /// Publishes the offered heads (the available ring's index).
        fn publish(&self) {
            self.mem
                .write_obj(self.submitted.to_le(), GuestAddress(AVAIL + 2))
                .unwrap();
        }

        /// Makes `n` (at most 5) reads of two sectors available before one kick: read `i`
        /// of sector `8 i` into `DATA + 0x1000 i`, status at `STATUS + i`, three descriptors
        /// apiece (15 of the table's 16).
        fn submit_reads(&mut self, n: u64) {
            for i in 0..n {
                let hdr = HDR + 0x100 * i;
                self.mem
                    .write_obj(VIRTIO_BLK_T_IN.to_le(), GuestAddress(hdr))
                    .unwrap();
                self.mem.write_obj(0u32, GuestAddress(hdr + 4)).unwrap();
                self.mem
                    .write_obj((8 * i).to_le(), GuestAddress(hdr + 8))
                    .unwrap();
                let base = 3 * i as u16;
                let descs = [
                    Descriptor::new(hdr, 16, VRING_DESC_F_NEXT as u16, base + 1),
                    Descriptor::new(
                        DATA + 0x1000 * i,
                        1024,
                        (VRING_DESC_F_NEXT | VRING_DESC_F_WRITE) as u16,
                        base + 2,
                    ),
                    Descriptor::new(STATUS + i, 1, VRING_DESC_F_WRITE as u16, 0),
                ];
                self.write_descriptors(base, &descs.map(RawDescriptor::from));
                self.offer(base);
            }
            self.publish();
        }

        /// Checks the `n` reads of [`Self::submit_reads`] completed with `data`'s sectors.
        fn check_reads(&self, n: u64, data: &[u8]) {
            assert_eq!(self.used_idx(), n as u16);
            let mut heads: Vec<u32> = (0..n)
                .map(|k| {
                    let e: VirtqUsedElem =
                        self.mem.read_obj(GuestAddress(USED + 4 + 8 * k)).unwrap();
                    assert_eq!(e.len(), 1025);
                    e.id()
                })
                .collect();
            heads.sort_unstable();
            assert_eq!(heads, (0..n as u32).map(|i| 3 * i).collect::<Vec<_>>());
            for i in 0..n {
                let status: u8 = self.mem.read_obj(GuestAddress(STATUS + i)).unwrap();
                assert_eq!(status, STATUS_OK);
                let mut got = vec![0u8; 1024];
                self.mem
                    .read_slice(&mut got, GuestAddress(DATA + 0x1000 * i))
                    .unwrap();
                let start = (8 * i * SECTOR_SIZE) as usize;
                assert_eq!(got, data[start..start + 1024]);
            }
        }

        fn used_idx(&self) -> u16 {
            u16::from_le(self.mem.read_obj::<u16>(GuestAddress(USED + 2)).unwrap())
        }

        fn last_used(&self) -> VirtqUsedElem {
            let idx = self.used_idx().wrapping_sub(1) % QUEUE_LEN;
            self.mem
                .read_obj(GuestAddress(USED + 4 + 8 * u64::from(idx)))
                .unwrap()
        }

        /// Kicks the queue and waits (bounded) until the used ring holds `used` entries.
        fn kick_and_wait(&mut self, used: u16) {
            self.device.process_queue(0);
            let mut fds: Vec<libc::pollfd> = self
                .device
                .event_fds()
                .into_iter()
                .map(|fd| libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            for _ in 0..1000 {
                if self.used_idx() == used {
                    break;
                }
                // SAFETY: valid pollfds for the duration of the call.
                unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
                for (i, fd) in fds.iter_mut().enumerate() {
                    if std::mem::take(&mut fd.revents) != 0 {
                        self.device.process_event(i);
                    }
                }
            }
            assert_eq!(self.used_idx(), used, "requests never completed");
        }

        /// Kicks the queue and waits (bounded) until the request is in the used ring.
        fn run(&mut self) -> (u8, u32) {
            let before = self.used_idx();
            self.kick_and_wait(before.wrapping_add(1));
            let used = self.last_used();
            (self.mem.read_obj(GuestAddress(STATUS)).unwrap(), used.len())
        }

        fn header(&self, kind: u32, sector: u64) {
            self.mem.write_obj(kind.to_le(), GuestAddress(HDR)).unwrap();
            self.mem.write_obj(0u32, GuestAddress(HDR + 4)).unwrap();
            self.mem
                .write_obj(sector.to_le(), GuestAddress(HDR + 8))
                .unwrap();
            self.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        }

        fn file_bytes(&self, offset: u64, len: usize) -> Vec<u8> {
            let mut f = self.file.as_file();
            f.seek(SeekFrom::Start(offset)).unwrap();
            let mut buf = vec![0u8; len];
            f.read_exact(&mut buf).unwrap();
            buf
        }

        fn write_file(&self, offset: u64, data: &[u8]) {
            let mut f = self.file.as_file();
            f.seek(SeekFrom::Start(offset)).unwrap();
            f.write_all(data).unwrap();
        }
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn read_returns_disk_contents() {
        let mut h = Harness::new(false, false);
        let data = pattern(1024, 7);
        h.write_file(2 * SECTOR_SIZE, &data);
        h.header(VIRTIO_BLK_T_IN, 2);
        h.submit(&[
            (HDR, 16, false),
            (DATA, 512, true),
            (DATA + 0x1000, 512, true),
            (STATUS, 1, true),
        ]);
        assert_eq!(h.run(), (STATUS_OK, 1025));
        let mut got = vec![0u8; 1024];
        h.mem
            .read_slice(&mut got[..512], GuestAddress(DATA))
            .unwrap();
        h.mem
            .read_slice(&mut got[512..], GuestAddress(DATA + 0x1000))
            .unwrap();
        assert_eq!(got, data);
        assert_eq!(h.device.metrics().read_bytes.get(), 1024);
        assert_eq!(*h.interrupts.queue.lock().unwrap(), vec![0]);
    }

    #[test]
    fn write_reaches_the_file_and_flush_succeeds() {
        let mut h = Harness::new(false, false);
        let data = pattern(2048, 3);
        h.mem.write_slice(&data, GuestAddress(DATA)).unwrap();
        h.header(VIRTIO_BLK_T_OUT, 60);
        h.submit(&[(HDR, 16, false), (DATA, 2048, false), (STATUS, 1, true)]);
        assert_eq!(h.run(), (STATUS_OK, 1));
        assert_eq!(h.file_bytes(60 * SECTOR_SIZE, 2048), data);
        h.header(VIRTIO_BLK_T_FLUSH, 0);
        h.submit(&[(HDR, 16, false), (STATUS, 1, true)]);
        assert_eq!(h.run(), (STATUS_OK, 1));
        let m = h.device.metrics();
        assert_eq!(
            (m.write_ops.get(), m.write_bytes.get(), m.flush_ops.get()),
            (1, 2048, 1)
        );
    }

    #[test]
    fn many_requests_in_flight_complete_out_of_order_correctly() {
        // Through io_uring where the kernel has it, and through the workers.
        for io_uring in [true, false] {
            let mut h = Harness::build(false, false, CacheMode::None, io_uring);
            let data = pattern((DISK_SECTORS * SECTOR_SIZE) as usize, 11);
            h.write_file(0, &data);
            h.submit_reads(5);
            h.kick_and_wait(5);
            h.check_reads(5, &data);
            let m = h.device.metrics();
            let through_ring = if h.device.uses_io_uring() { 5 } else { 0 };
            assert!(io_uring || through_ring == 0);
            assert_eq!(m.uring_ops.get(), through_ring, "io_uring {io_uring}");
            assert_eq!((m.read_ops.get(), m.uring_retries.get()), (5, 0));
            // And writes, then reading them back.
            h.header(VIRTIO_BLK_T_OUT, 40);
            h.mem
                .write_slice(&pattern(4096, 3), GuestAddress(DATA))
                .unwrap();
            h.submit(&[(HDR, 16, false), (DATA, 4096, false), (STATUS, 1, true)]);
            assert_eq!(h.run(), (STATUS_OK, 1));
            assert_eq!(h.file_bytes(40 * SECTOR_SIZE, 4096), pattern(4096, 3));
        }
    }

    #[test]
    fn a_full_host_queue_leaves_chains_in_the_ring_until_completions_come() {
        for io_uring in [true, false] {
            let mut h = Harness::build(false, false, CacheMode::None, io_uring);
            h.device.max_in_flight = 2;
            let data = pattern((DISK_SECTORS * SECTOR_SIZE) as usize, 7);
            h.write_file(0, &data);
            h.submit_reads(5);
            h.device.process_queue(0);
            // Two at the host, three still in the ring.
            assert!(h.device.throttled);
            // Completions make room: everything gets done without another kick.
            h.kick_and_wait(5);
            h.check_reads(5, &data);
            assert!(!h.device.throttled);
            assert_eq!(h.device.metrics().read_ops.get(), 5);
        }
    }

    #[test]
    fn indirect_descriptors() {
        let mut h = Harness::new(false, false);
        let data = pattern(512, 9);
        h.write_file(0, &data);
        h.header(VIRTIO_BLK_T_IN, 0);
        let table = 0x3a_0000;
        let entries = [
            Descriptor::new(HDR, 16, VRING_DESC_F_NEXT as u16, 1),
            Descriptor::new(
                DATA,
                512,
                (VRING_DESC_F_NEXT | VRING_DESC_F_WRITE) as u16,
                2,
            ),
            Descriptor::new(STATUS, 1, VRING_DESC_F_WRITE as u16, 0),
        ];
        for (i, e) in entries.iter().enumerate() {
            h.mem
                .write_obj(RawDescriptor::from(*e), GuestAddress(table + 16 * i as u64))
                .unwrap();
        }
        let head = RawDescriptor::from(Descriptor::new(table, 48, VRING_DESC_F_INDIRECT as u16, 0));
        h.submit_raw(&[head], 0);
        assert_eq!(h.run(), (STATUS_OK, 513));
        let mut got = vec![0u8; 512];
        h.mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
        assert_eq!(got, data);
    }

    fn range(h: &Harness, at: u64, sector: u64, sectors: u32, flags: u32) {
        h.mem.write_obj(sector.to_le(), GuestAddress(at)).unwrap();
        h.mem
            .write_obj(sectors.to_le(), GuestAddress(at + 8))
            .unwrap();
        h.mem
            .write_obj(flags.to_le(), GuestAddress(at + 12))
            .unwrap();
    }

    #[test]
    fn discard_and_write_zeroes_clear_ranges() {
        let mut h = Harness::new(false, false);
        h.write_file(0, &pattern((DISK_SECTORS * SECTOR_SIZE) as usize, 1));
        h.header(VIRTIO_BLK_T_DISCARD, 0);
        range(&h, DATA, 8, 8, 0);
        h.submit(&[(HDR, 16, false), (DATA, 16, false), (STATUS, 1, true)]);
        assert_eq!(h.run(), (STATUS_OK, 1));
        assert_eq!(h.file_bytes(8 * SECTOR_SIZE, 4096), vec![0; 4096]);
        for (flags, sector) in [(0, 16), (WRITE_ZEROES_FLAG_UNMAP, 32)] {
            h.header(VIRTIO_BLK_T_WRITE_ZEROES, 0);
            range(&h, DATA, sector, 3, flags);
            h.submit(&[(HDR, 16, false), (DATA, 16, false), (STATUS, 1, true)]);
            assert_eq!(h.run(), (STATUS_OK, 1));
            assert_eq!(h.file_bytes(sector * SECTOR_SIZE, 1536), vec![0; 1536]);
            // The neighbours are untouched.
            assert_ne!(h.file_bytes((sector + 3) * SECTOR_SIZE, 512), vec![0; 512]);
        }
        let m = h.device.metrics();
        assert_eq!((m.discard_ops.get(), m.write_zeroes_ops.get()), (1, 2));
        assert_eq!(
            h.file.as_file().metadata().unwrap().len(),
            DISK_SECTORS * SECTOR_SIZE
        );
    }

    #[test]
    fn get_id_returns_the_serial() {
        let mut h = Harness::new(false, false);
        h.header(VIRTIO_BLK_T_GET_ID, 0);
        h.submit(&[(HDR, 16, false), (DATA, 20, true), (STATUS, 1, true)]);
        assert_eq!(h.run(), (STATUS_OK, 21));
        let mut id = [0u8; 20];
        h.mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
        assert_eq!(&id, b"SERIAL-0123456789ABC");
        // A short buffer gets a truncated ID.
        h.header(VIRTIO_BLK_T_GET_ID, 0);
        h.submit(&[(HDR, 16, false), (DATA + 0x100, 6, true), (STATUS, 1, true)]);
        assert_eq!(h.run(), (STATUS_OK, 7));
        let mut id = [0u8; 6];
        h.mem
            .read_slice(&mut id, GuestAddress(DATA + 0x100))
            .unwrap();
        assert_eq!(&id, b"SERIAL");
    }

    #[test]
    fn read_only_disk_refuses_writes() {
        let mut h = Harness::new(true, false);
        assert_ne!(h.device.features() & (1 << VIRTIO_BLK_F_RO), 0);
        assert_eq!(h.device.features() & (1 << VIRTIO_BLK_F_DISCARD), 0);
        let before = h.file_bytes(0, 512);
        h.mem
            .write_slice(&pattern(512, 5), GuestAddress(DATA))
            .unwrap();
        h.header(VIRTIO_BLK_T_OUT, 0);
        h.submit(&[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)]);
        assert_eq!(h.run(), (STATUS_IOERR, 1));
        assert_eq!(h.file_bytes(0, 512), before);
        h.header(VIRTIO_BLK_T_WRITE_ZEROES, 0);
        range(&h, DATA, 0, 1, 0);
        h.submit(&[(HDR, 16, false), (DATA, 16, false), (STATUS, 1, true)]);
        assert_eq!(h.run(), (STATUS_IOERR, 1));
        // Reads still work.
        h.header(VIRTIO_BLK_T_IN, 0);
        h.submit(&[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)]);
        assert_eq!(h.run(), (STATUS_OK, 513));
        assert_eq!(h.device.metrics().read_only_violations.get(), 2);
    }

    #[test]
    fn out_of_range_sectors_fail() {
        let mut h = Harness::new(false, false);
        for sector in [DISK_SECTORS, DISK_SECTORS - 1, u64::MAX] {
            h.header(VIRTIO_BLK_T_IN, sector);
            h.submit(&[(HDR, 16, false), (DATA, 1024, true), (STATUS, 1, true)]);
            assert_eq!(h.run(), (STATUS_IOERR, 1), "sector {sector}");
        }
        // The last sector itself is fine.
        h.header(VIRTIO_BLK_T_IN, DISK_SECTORS - 1);
        h.submit(&[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)]);
        assert_eq!(h.run(), (STATUS_OK, 513));
        assert_eq!(h.device.metrics().invalid_requests.get(), 3);
    }

    #[test]
    fn malformed_chains_fail_the_request() {
        let mut h = Harness::new(false, false);
        h.header(VIRTIO_BLK_T_IN, 0);
        // Too short: no status descriptor. Nothing is written, the chain is returned.
        h.submit(&[(HDR, 16, false)]);
        assert_eq!(h.run(), (0xff, 0));
        // Wrong direction: the data of a read is device-readable.
        h.submit(&[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)]);
        assert_eq!(h.run(), (STATUS_IOERR, 1));
        // Status descriptor not writable.
        h.header(VIRTIO_BLK_T_IN, 0);
        h.submit(&[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, false)]);
        assert_eq!(h.run(), (0xff, 0));
        // Buffer outside guest memory.
        h.submit(&[(HDR, 16, false), (0x3f_ff00, 512, true), (STATUS, 1, true)]);
        assert_eq!(h.run(), (0xff, 0));
        // Lengths adding up past 4 GiB.
        h.submit(&[
            (HDR, 16, false),
            (DATA, u32::MAX, true),
            (DATA, 512, true),
            (STATUS, 1, true),
        ]);
        assert_eq!(h.run(), (0xff, 0));
        // A descriptor loop: 0 -> 1 -> 0.
        let looped = [
            RawDescriptor::from(Descriptor::new(HDR, 16, VRING_DESC_F_NEXT as u16, 1)),
            RawDescriptor::from(Descriptor::new(
                STATUS,
                1,
                (VRING_DESC_F_NEXT | VRING_DESC_F_WRITE) as u16,
                0,
            )),
        ];
        h.submit_raw(&looped, 0);
        assert_eq!(h.run(), (0xff, 0));
        assert_eq!(h.device.metrics().invalid_requests.get(), 6);
        assert!(!h.interrupts.needs_reset.load(Ordering::SeqCst));
        // The device still works.
        h.submit(&[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)]);
        assert_eq!(h.run(), (STATUS_OK, 513));
    }

    #[test]
    fn corrupted_rings_set_needs_reset() {
        let mut h = Harness::new(false, false);
        // A head index outside the descriptor table cannot be returned.
        h.submit_raw(&[], 200);
        h.device.process_queue(0);
        assert!(h.interrupts.needs_reset.load(Ordering::SeqCst));
        assert_eq!(h.device.metrics().needs_reset.get(), 1);
        // A broken device ignores further kicks until reset.
        h.header(VIRTIO_BLK_T_IN, 0);
        h.submit(&[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)]);
        h.device.process_queue(0);
        assert_eq!(h.used_idx(), 0);

        // An avail index more than a queue ahead.
        let mut h = Harness::new(false, false);
        h.mem
            .write_obj((QUEUE_LEN + 5).to_le(), GuestAddress(AVAIL + 2))
            .unwrap();
        h.device.process_queue(0);
        assert!(h.interrupts.needs_reset.load(Ordering::SeqCst));
    }

    #[test]
    fn event_idx_suppresses_interrupts() {
        let mut h = Harness::new(false, true);
        let used_event = AVAIL + 4 + 2 * u64::from(QUEUE_LEN);
        // The driver wants an interrupt only after the second used entry.
        h.mem
            .write_obj(1u16.to_le(), GuestAddress(used_event))
            .unwrap();
        h.header(VIRTIO_BLK_T_FLUSH, 0);
        h.submit(&[(HDR, 16, false), (STATUS, 1, true)]);
        h.run();
        assert!(h.interrupts.queue.lock().unwrap().is_empty());
        h.submit(&[(HDR, 16, false), (STATUS, 1, true)]);
        h.run();
        assert_eq!(*h.interrupts.queue.lock().unwrap(), vec![0]);
    }

    #[test]
    fn reset_waits_for_io_and_deactivates() {
        let mut h = Harness::new(false, false);
        h.header(VIRTIO_BLK_T_IN, 0);
        h.submit(&[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)]);
        h.device.process_queue(0);
        h.device.reset();
        assert!(!h.device.is_activated());
        // Completions of the old activation are gone; kicks are ignored.
        h.device.process_event(0);
        h.device.process_queue(0);
        assert_eq!(h.used_idx(), 0);
    }

    #[test]
    fn a_polling_device_takes_requests_and_completions_without_kicks() {
        for event_idx in [false, true] {
            let mut h = Harness::new(false, event_idx);
            let data = pattern((DISK_SECTORS * SECTOR_SIZE) as usize, 9);
            h.write_file(0, &data);
            assert_eq!(h.device.poll(), Progress::default());
            h.device.set_polling(true);
            h.submit_reads(5);
            // The driver need not kick: notifications are off.
            let flags: u16 = h.mem.read_obj(GuestAddress(USED)).unwrap();
            if !event_idx {
                assert_eq!(u16::from_le(flags), VRING_USED_F_NO_NOTIFY as u16);
            }
            // The first look takes all five chains to the workers (O_DIRECT).
            let first = h.device.poll();
            assert!(first.requests, "event_idx {event_idx}");
            // They are at the host: completions are coming.
            assert!(first.in_flight);
            // Later looks publish the completions as the workers finish them (bounded).
            let mut completions = 0;
            for _ in 0..1000 {
                if h.used_idx() == 5 {
                    break;
                }
                let p = h.device.poll();
                assert!(!p.requests);
                completions += u32::from(p.completions);
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            assert!(completions > 0);
            h.check_reads(5, &data);
            // All published: nothing more is coming.
            assert_eq!(h.device.poll(), Progress::default());
            let m = h.device.metrics();
            assert_eq!((m.queue_events.get(), m.polled_batches.get()), (0, 1));
            assert_eq!(m.read_ops.get(), 5);
            // Stopping with nothing new: nothing to do, and kicks are wanted again.
            assert!(!h.device.set_polling(false));
            let flags: u16 = h.mem.read_obj(GuestAddress(USED)).unwrap();
            assert_eq!(u16::from_le(flags), 0);
        }
    }

    #[test]
    fn config_space() {
        let h = Harness::new(false, false);
        let mut b = [0u8; 8];
        h.device.read_config(0, &mut b);
        assert_eq!(u64::from_le_bytes(b), DISK_SECTORS);
        let mut w = [0u8; 4];
        h.device.read_config(0x0c, &mut w);
        assert_eq!(
            u32::from_le_bytes(w),
            u32::from(crate::virtio::block::QUEUE_SIZE) - 2
        );
        h.device.read_config(0x28, &mut w);
        assert_eq!(u32::from_le_bytes(w), 32);
        // Past the structure, or wrapping: zeros.
        h.device.read_config(0x3a, &mut w);
        assert_eq!(w, [0; 4]);
        h.device.read_config(u64::MAX, &mut w);
        assert_eq!(w, [0; 4]);
    }

    #[test]
    #[cfg_attr(
        any(target_arch = "s390x", target_arch = "powerpc64"),
        ignore = "qemu-user 7.2 does not pass preadv2(RWF_NOWAIT) through; run with --include-ignored on real hardware"
    )]
    fn page_cache_hits_are_served_on_the_device_thread_in_one_batch() {
        let mut h = Harness::with_cache(false, false, CacheMode::Writeback);
        let data = pattern((DISK_SECTORS * SECTOR_SIZE) as usize, 5);
        // Written through the page cache: every sector is cached.
        h.write_file(0, &data);
        h.submit_reads(5);
        h.device.process_queue(0);
        // Done without the workers: nothing to wait for.
        h.check_reads(5, &data);
        let m = h.device.metrics();
        assert_eq!((m.nowait_hits.get(), m.nowait_misses.get()), (5, 0));
        assert_eq!((m.read_ops.get(), m.read_bytes.get()), (5, 5 * 1024));
        // One interrupt for the batch.
        assert_eq!(*h.interrupts.queue.lock().unwrap(), vec![0]);
    }

    #[test]
    #[cfg_attr(
        any(target_arch = "s390x", target_arch = "powerpc64"),
        ignore = "qemu-user 7.2 does not pass preadv2(RWF_NOWAIT) through; run with --include-ignored on real hardware"
    )]
    fn uncached_reads_fall_back_to_blocking_io() {
        let mut h = Harness::with_cache(false, false, CacheMode::Writethrough);
        let data = pattern(4096, 13);
        h.write_file(0, &data);
        let file = h.file.as_file();
        file.sync_data().unwrap();
        // SAFETY: posix_fadvise only takes integers and an open fd.
        let dropped =
            unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(dropped, 0);
        h.header(VIRTIO_BLK_T_IN, 0);
        h.submit(&[(HDR, 16, false), (DATA, 4096, true), (STATUS, 1, true)]);
        assert_eq!(h.run(), (STATUS_OK, 4097));
        let m = h.device.metrics();
        assert_eq!((m.nowait_hits.get(), m.nowait_misses.get()), (0, 1));
        let mut got = vec![0u8; 4096];
        h.mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
        assert_eq!(got, data);
        // The blocking read (io_uring's or a worker's) cached the data: the same read
        // again is a hit.
        h.mem.write_slice(&[0u8; 4096], GuestAddress(DATA)).unwrap();
        h.submit(&[(HDR, 16, false), (DATA, 4096, true), (STATUS, 1, true)]);
        assert_eq!(h.run(), (STATUS_OK, 4097));
        assert_eq!((m.nowait_hits.get(), m.nowait_misses.get()), (1, 1));
        h.mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
        assert_eq!(got, data);
        // O_DSYNC writes always wait for the disk: never tried on the device thread.
        h.header(VIRTIO_BLK_T_OUT, 16);
        h.submit(&[(HDR, 16, false), (DATA, 4096, false), (STATUS, 1, true)]);
        assert_eq!(h.run(), (STATUS_OK, 1));
        assert_eq!((m.nowait_hits.get(), m.nowait_misses.get()), (1, 1));
        assert_eq!(h.file_bytes(16 * SECTOR_SIZE, 4096), data);
    }

    #[test]
    fn writeback_writes_reach_the_file() {
        let mut h = Harness::with_cache(false, false, CacheMode::Writeback);
        let data = pattern(3072, 21);
        h.mem.write_slice(&data, GuestAddress(DATA)).unwrap();
        h.header(VIRTIO_BLK_T_OUT, 8);
        h.submit(&[
            (HDR, 16, false),
            (DATA, 1024, false),
            (DATA + 1024, 2048, false),
            (STATUS, 1, true),
        ]);
        assert_eq!(h.run(), (STATUS_OK, 1));
        assert_eq!(h.file_bytes(8 * SECTOR_SIZE, 3072), data);
        // On the device thread where the file system writes without blocking, else on a
        // worker: either way exactly one attempt.
        let m = h.device.metrics();
        assert_eq!(m.nowait_hits.get() + m.nowait_misses.get(), 1);
        assert_eq!((m.write_ops.get(), m.write_bytes.get()), (1, 3072));
    }

    #[test]
    fn direct_io_bounces_unaligned_guest_buffers() {
        let mut h = Harness::new(false, false);
        assert_eq!(h.device.cache_mode(), CacheMode::None);
        let data = pattern(1536, 17);
        // Buffers at odd addresses and of lengths O_DIRECT refuses.
        h.mem
            .write_slice(&data[..700], GuestAddress(DATA + 3))
            .unwrap();
        h.mem
            .write_slice(&data[700..], GuestAddress(DATA + 0x1005))
            .unwrap();
        h.header(VIRTIO_BLK_T_OUT, 4);
        h.submit(&[
            (HDR, 16, false),
            (DATA + 3, 700, false),
            (DATA + 0x1005, 836, false),
            (STATUS, 1, true),
        ]);
        assert_eq!(h.run(), (STATUS_OK, 1));
        assert_eq!(h.file_bytes(4 * SECTOR_SIZE, 1536), data);
        h.header(VIRTIO_BLK_T_IN, 4);
        h.submit(&[
            (HDR, 16, false),
            (DATA + 0x2007, 1000, true),
            (DATA + 0x3001, 536, true),
            (STATUS, 1, true),
        ]);
        assert_eq!(h.run(), (STATUS_OK, 1537));
        let mut got = vec![0u8; 1536];
        h.mem
            .read_slice(&mut got[..1000], GuestAddress(DATA + 0x2007))
            .unwrap();
        h.mem
            .read_slice(&mut got[1000..], GuestAddress(DATA + 0x3001))
            .unwrap();
        assert_eq!(got, data);
        let m = h.device.metrics();
        // Direct I/O never runs on the device thread.
        assert_eq!((m.nowait_hits.get(), m.nowait_misses.get()), (0, 0));
        assert_eq!(m.io_errors.get(), 0);
    }
}
