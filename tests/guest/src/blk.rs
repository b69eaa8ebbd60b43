//! virtio-blk through `virtio-drivers`' driver: capacity, read-only flag, serial (the device
//! ID), a CRC of the first 4 KiB, and with `blkwrite` a write/flush/read-back of a known
//! pattern at bytes 4096..8192 — byte at disk offset `o` is `(o % 251) ^ 0x5a` — that the host
//! then finds in the image. A read-only disk must refuse that write.
//!
//! With `blkcrc32=N`, the CRC-32 of every disk's first `N` bytes ([`crc32`]): the host
//! compares it with the CRC of what it put on the disk (an imported image, say). CRC-32,
//! not a cryptographic hash: it guards against accidents, not an adversary, and where
//! the guest's ring-0 code runs in PVM's instruction emulator (the development machines)
//! it is about 25 times cheaper than a software SHA-256 — about 6 s per MiB there.
//!
//! With `blkbench`, the first disk is timed on kvmclock (see [`bench`]): the host's
//! `benches/virtio.rs` turns the lines into MiB/s and IOPS next to the same operations on
//! the host.

use crate::bootinfo::Escaped;
use crate::dma::GuestHal;
use crate::doorbell::Doorbell;
use crate::kv;
use crate::kvmclock::KvmClock;
use virtio_drivers::device::blk::{VirtIOBlk, SECTOR_SIZE};
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction, PciRoot};
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::Transport;

/// First byte and length of the pattern `blkwrite` writes.
pub const PATTERN_OFFSET: usize = 4096;
pub const PATTERN_LEN: usize = 4096;

/// The pattern byte at disk offset `offset`.
pub fn pattern_byte(offset: usize) -> u8 {
    (offset % 251) as u8 ^ 0x5a
}

/// Checks one virtio-blk function; prints `virtio.blk.<index>*` keys. With `cidata`, a
/// disk holding cloud-init's `network-config` returns it parsed (`cidata=` keys).
///
/// With `bench_it` the disk is driven through a [`Doorbell`] (`cam` reads its
/// capabilities) and timed ([`bench`]).
#[allow(clippy::too_many_arguments)]
pub fn check<C: ConfigurationAccess, A: ConfigurationAccess>(
    root: &mut PciRoot<C>,
    cam: &A,
    df: DeviceFunction,
    index: usize,
    write: bool,
    bench_it: bool,
    cidata: bool,
    crc_len: Option<u64>,
) -> Option<crate::cidata::NetworkConfig> {
    let transport = match PciTransport::new::<GuestHal, C>(root, df) {
        Ok(t) => t,
        Err(e) => {
            kv!(
                core::format_args!("virtio.blk.{index}"),
                "{df},transport error: {e}"
            );
            return None;
        }
    };
    let checks = Checks {
        index,
        write,
        cidata,
        crc_len,
    };
    if !bench_it {
        return checks.run(transport, df, |_| {});
    }
    match Doorbell::new(transport, cam, df) {
        Some(doorbell) => checks.run(doorbell, df, bench),
        None => {
            kv!("blkbench", "no notification capability");
            None
        }
    }
}

/// What [`check`] does with a disk besides its set-up.
struct Checks {
    index: usize,
    write: bool,
    cidata: bool,
    crc_len: Option<u64>,
}

impl Checks {
    /// Sets the disk up over `transport`, checks it, and runs `bench` on it.
    fn run<T: Transport>(
        self,
        transport: T,
        df: DeviceFunction,
        bench: impl FnOnce(&mut VirtIOBlk<GuestHal, T>),
    ) -> Option<crate::cidata::NetworkConfig> {
        let Checks {
            index,
            write,
            cidata,
            crc_len,
        } = self;
        let mut blk = match VirtIOBlk::<GuestHal, _>::new(transport) {
            Ok(b) => b,
            Err(e) => {
                kv!(
                    core::format_args!("virtio.blk.{index}"),
                    "{df},init error: {e}"
                );
                return None;
            }
        };
        let readonly = blk.readonly();
        kv!(
            core::format_args!("virtio.blk.{index}"),
            "{df},sectors={},ro={}",
            blk.capacity(),
            u8::from(readonly)
        );
        let mut id = [0u8; 20];
        match blk.device_id(&mut id) {
            Ok(len) => kv!(
                core::format_args!("virtio.blk.{index}.serial"),
                "{}",
                Escaped(&id[..len])
            ),
            Err(e) => kv!(
                core::format_args!("virtio.blk.{index}.serial"),
                "error: {e}"
            ),
        }
        let mut buf = [0u8; PATTERN_LEN];
        match blk.read_blocks(0, &mut buf) {
            Ok(()) => kv!(
                core::format_args!("virtio.blk.{index}.crc32.0"),
                "{:#010x}",
                crc32fast::hash(&buf)
            ),
            Err(e) => kv!(
                core::format_args!("virtio.blk.{index}.crc32.0"),
                "error: {e}"
            ),
        }
        if let Some(len) = crc_len {
            crc32(&mut blk, index, len);
        }
        bench(&mut blk);
        let network = if cidata {
            read_cidata(&mut blk, index)
        } else {
            None
        };
        if !write {
            return network;
        }
        if blk.capacity() < ((PATTERN_OFFSET + PATTERN_LEN) / SECTOR_SIZE) as u64 {
            kv!(core::format_args!("virtio.blk.{index}.write"), "too-small");
            return None;
        }
        for (i, b) in buf.iter_mut().enumerate() {
            *b = pattern_byte(PATTERN_OFFSET + i);
        }
        let sector = PATTERN_OFFSET / SECTOR_SIZE;
        let result = match blk.write_blocks(sector, &buf) {
            Err(_) if readonly => "refused",
            Ok(()) if readonly => "accepted-on-readonly",
            Err(virtio_drivers::Error::IoError) => "io-error",
            Err(_) => "error",
            Ok(()) => {
                let flushed = blk.flush().is_ok();
                let mut back = [0u8; PATTERN_LEN];
                match blk.read_blocks(sector, &mut back) {
                    Ok(()) if back == buf && flushed => "ok",
                    Ok(()) if back == buf => "ok-flush-failed",
                    Ok(()) => "mismatch",
                    Err(_) => "read-back-error",
                }
            }
        };
        kv!(core::format_args!("virtio.blk.{index}.write"), "{result}");
        network
    }
}

/// `network-config` of a `cidata` volume, parsed; `None` (quietly) for other disks.
fn read_cidata<T: virtio_drivers::transport::Transport>(
    blk: &mut VirtIOBlk<GuestHal, T>,
    index: usize,
) -> Option<crate::cidata::NetworkConfig> {
    use crate::cidata::{parse_netplan, read_network_config, FatError};
    let mut buf = [0u8; 4096];
    let read = |sector: u32, out: &mut [u8; 512]| blk.read_blocks(sector as usize, out).is_ok();
    match read_network_config(read, &mut buf) {
        Ok(len) => {
            let Ok(text) = core::str::from_utf8(&buf[..len]) else {
                kv!("cidata", "error: network-config is not UTF-8");
                return None;
            };
            let config = parse_netplan(text);
            kv!("cidata", "disk {index},network-config {len} bytes");
            for (i, e) in config.ethernets[..config.count].iter().enumerate() {
                let mut mac = [0u8; 17];
                if let Some(m) = e.mac {
                    for (j, b) in m.iter().enumerate() {
                        const HEX: &[u8; 16] = b"0123456789abcdef";
                        mac[j * 3] = HEX[usize::from(b >> 4)];
                        mac[j * 3 + 1] = HEX[usize::from(b & 15)];
                        if j < 5 {
                            mac[j * 3 + 2] = b'-';
                        }
                    }
                }
                let mac = core::str::from_utf8(&mac).unwrap_or("");
                match e.address {
                    Some((ip, prefix)) => kv!(
                        core::format_args!("cidata.ethernet.{i}"),
                        "mac={mac},address={}.{}.{}.{}/{prefix}",
                        ip[0],
                        ip[1],
                        ip[2],
                        ip[3]
                    ),
                    None => kv!(
                        core::format_args!("cidata.ethernet.{i}"),
                        "mac={mac},dhcp={}",
                        u8::from(e.dhcp)
                    ),
                }
            }
            Some(config)
        }
        Err(FatError::NotFat | FatError::Label) => None,
        Err(e) => {
            kv!("cidata", "error: disk {index}: {e:?}");
            None
        }
    }
}

/// Bytes of each request [`crc32`] makes.
const CRC_CHUNK: usize = 64 << 10;

/// Prints `virtio.blk.<index>.crc32=<len>,0x<crc>` of the disk's first `len` bytes, read
/// in [`CRC_CHUNK`] requests, or `<len>,` and what failed.
fn crc32<T: virtio_drivers::transport::Transport>(
    blk: &mut VirtIOBlk<GuestHal, T>,
    index: usize,
    len: u64,
) {
    if len > blk.capacity() * SECTOR_SIZE as u64 {
        kv!(
            core::format_args!("virtio.blk.{index}.crc32"),
            "{len},larger than the disk"
        );
        return;
    }
    // One buffer for every disk: the DMA pool never frees pages.
    static BUF: core::sync::atomic::AtomicPtr<u8> =
        core::sync::atomic::AtomicPtr::new(core::ptr::null_mut());
    let mut ptr = BUF.load(core::sync::atomic::Ordering::Acquire);
    if ptr.is_null() {
        let Some(pages) = crate::dma::alloc_pages(CRC_CHUNK / 4096) else {
            kv!(
                core::format_args!("virtio.blk.{index}.crc32"),
                "{len},no DMA pages"
            );
            return;
        };
        ptr = pages.as_ptr();
        BUF.store(ptr, core::sync::atomic::Ordering::Release);
    }
    // SAFETY: CRC_CHUNK bytes of pages the pool handed out for this buffer alone; the guest
    // checks its disks one at a time on the boot CPU, so no two users hold it at once.
    let buf = unsafe { core::slice::from_raw_parts_mut(ptr, CRC_CHUNK) };
    let mut hasher = crc32fast::Hasher::new();
    let mut offset = 0u64;
    while offset < len {
        let want = (len - offset).min(CRC_CHUNK as u64) as usize;
        // Whole sectors are read; only the wanted bytes are hashed.
        let sectors = want.div_ceil(SECTOR_SIZE) * SECTOR_SIZE;
        if let Err(e) = blk.read_blocks((offset / SECTOR_SIZE as u64) as usize, &mut buf[..sectors])
        {
            kv!(
                core::format_args!("virtio.blk.{index}.crc32"),
                "{len},read error at {offset}: {e}"
            );
            return;
        }
        hasher.update(&buf[..want]);
        offset += want as u64;
    }
    kv!(
        core::format_args!("virtio.blk.{index}.crc32"),
        "{len},{:#010x}",
        hasher.finalize()
    );
}

/// Bytes of each sequential request.
const SEQ_CHUNK: usize = 64 << 10;
/// The most of the disk the sequential passes cover.
const SEQ_MAX: u64 = 64 << 20;
/// Random 4 KiB reads per queue depth.
const RANDOM_OPS: usize = 2048;

/// Random block numbers (xorshift64*): the same sequence on every run.
struct Blocks(u64, u64);

impl Blocks {
    fn next(&mut self) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        // 4 KiB blocks: 8 sectors each.
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % self.1) as usize * 8
    }
}

/// Prints `blkbench.seqread`, `blkbench.seqwrite` (`bytes,ns`) and `blkbench.randread.qd1`
/// (`ops,ns`), one request at a time through `VirtIOBlk`, or `blkbench=` and what failed.
/// Writes go over the data already there (the benchmark's scratch image).
fn bench<T: Transport>(blk: &mut VirtIOBlk<GuestHal, T>) {
    let Some(clock) = KvmClock::enable() else {
        kv!("blkbench", "no kvmclock");
        return;
    };
    let now = || clock.now_ns().0;
    let span = (blk.capacity() * SECTOR_SIZE as u64).min(SEQ_MAX) as usize / SEQ_CHUNK * SEQ_CHUNK;
    if span == 0 {
        kv!("blkbench", "disk too small");
        return;
    }
    let buf = crate::dma::alloc_pages(SEQ_CHUNK / 4096).expect("DMA pages for blkbench");
    // SAFETY: SEQ_CHUNK bytes of pages the pool handed out to this function alone.
    let buf = unsafe { core::slice::from_raw_parts_mut(buf.as_ptr(), SEQ_CHUNK) };
    let t = now();
    for offset in (0..span).step_by(SEQ_CHUNK) {
        if let Err(e) = blk.read_blocks(offset / SECTOR_SIZE, buf) {
            kv!("blkbench", "read error: {e}");
            return;
        }
    }
    kv!("blkbench.seqread", "{span},{}", now() - t);
    if !blk.readonly() {
        let t = now();
        for offset in (0..span).step_by(SEQ_CHUNK) {
            if let Err(e) = blk.write_blocks(offset / SECTOR_SIZE, buf) {
                kv!("blkbench", "write error: {e}");
                return;
            }
        }
        let flushed = blk.flush();
        kv!("blkbench.seqwrite", "{span},{}", now() - t);
        if let Err(e) = flushed {
            kv!("blkbench", "flush error: {e}");
            return;
        }
    }
    let blocks = span as u64 / 4096;
    let mut rng = Blocks(0x9e37_79b9_7f4a_7c15, blocks);
    let t = now();
    for _ in 0..RANDOM_OPS {
        if let Err(e) = blk.read_blocks(rng.next(), &mut buf[..4096]) {
            kv!("blkbench", "read error: {e}");
            return;
        }
    }
    kv!("blkbench.randread.qd1", "{RANDOM_OPS},{}", now() - t);
}

/// Requests in flight in [`bench_deep`].
const DEEP_DEPTH: usize = 32;
/// Its queue: three descriptors per request (header, data, status) without indirect
/// descriptors, which would take a heap allocation per request.
const DEEP_QUEUE: usize = 128;

/// `virtio_blk_req`'s header for a read (`VIRTIO_BLK_T_IN`) of `sector`.
fn read_header(sector: u64) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[8..].copy_from_slice(&sector.to_le_bytes());
    h
}

/// Random 4 KiB reads at queue depth 1 and [`DEEP_DEPTH`]: `blkbench.deep.qd1` and
/// `blkbench.deep.qd32` (`ops,ns,notifications,waiting ns`: the last is the time spent
/// spinning for a completion, so the rest is the driver's own work). `VirtIOBlk` keeps its queue at 16
/// entries (a private constant in virtio-drivers 0.13), so this drives the same device with
/// the same crate's PCI transport (behind a [`Doorbell`]) and `VirtQueue` at [`DEEP_QUEUE`]
/// entries and writes only the 16-byte request header itself. Each pass refills every free
/// slot, notifies the device once if it asked to hear (EVENT_IDX, spec rules), waits for a
/// completion and takes every completion there is, as a polling driver with a deep queue
/// does. It runs after [`check`], whose transport reset the device when it was dropped.
pub fn bench_deep<C: ConfigurationAccess, A: ConfigurationAccess>(
    root: &mut PciRoot<C>,
    cam: &A,
    df: DeviceFunction,
) {
    use virtio_drivers::device::common::Feature;
    use virtio_drivers::queue::VirtQueue;

    let Some(clock) = KvmClock::enable() else {
        kv!("blkbench.deep", "no kvmclock");
        return;
    };
    let now = || clock.now_ns().0;
    let transport = match PciTransport::new::<GuestHal, C>(root, df) {
        Ok(t) => t,
        Err(e) => {
            kv!("blkbench.deep", "transport error: {e}");
            return;
        }
    };
    let Some(mut transport) = Doorbell::new(transport, cam, df) else {
        kv!("blkbench.deep", "no notification capability");
        return;
    };
    let features = transport.begin_init(Feature::VERSION_1 | Feature::RING_EVENT_IDX);
    let event_idx = features.contains(Feature::RING_EVENT_IDX);
    transport.set_event_idx(event_idx);
    let mut queue =
        match VirtQueue::<GuestHal, DEEP_QUEUE>::new(&mut transport, 0, false, event_idx) {
            Ok(q) => q,
            Err(e) => {
                kv!("blkbench.deep", "queue error: {e}");
                return;
            }
        };
    transport.finish_init();
    // virtio-blk's capacity: the first 8 bytes of its configuration space, in sectors, read
    // as two 32-bit halves (the transport guarantees only 4-byte alignment).
    let sectors = match (
        transport.read_config_space::<u32>(0),
        transport.read_config_space::<u32>(4),
    ) {
        (Ok(lo), Ok(hi)) => u64::from(lo) | u64::from(hi) << 32,
        (Err(e), _) | (_, Err(e)) => {
            kv!("blkbench.deep", "config error: {e}");
            return;
        }
    };
    let blocks = (sectors * SECTOR_SIZE as u64).min(SEQ_MAX) / 4096;
    if blocks == 0 {
        kv!("blkbench.deep", "disk too small");
        return;
    }
    let Some(pages) = crate::dma::alloc_pages(DEEP_DEPTH) else {
        kv!("blkbench.deep", "no DMA pages");
        return;
    };
    // SAFETY: DEEP_DEPTH pages the pool handed out to this function alone.
    let data = unsafe { core::slice::from_raw_parts_mut(pages.as_ptr(), DEEP_DEPTH * 4096) };
    let mut headers = [[0u8; 16]; DEEP_DEPTH];
    let mut status = [[0xffu8; 1]; DEEP_DEPTH];
    for depth in [1, DEEP_DEPTH] {
        let mut rng = Blocks(0x9e37_79b9_7f4a_7c15, blocks);
        let mut tokens = [None::<u16>; DEEP_DEPTH];
        let (mut submitted, mut done, mut kicks, mut waited) = (0, 0, 0, 0);
        let chunks: [&mut [u8]; DEEP_DEPTH] = {
            let mut it = data.chunks_mut(4096);
            core::array::from_fn(|_| it.next().expect("DEEP_DEPTH chunks of 4 KiB"))
        };
        let t = now();
        while done < RANDOM_OPS {
            for slot in 0..depth {
                if tokens[slot].is_some() || submitted >= RANDOM_OPS {
                    continue;
                }
                headers[slot] = read_header(rng.next() as u64);
                status[slot] = [0xff];
                // SAFETY: the header, data chunk and status byte of `slot` are untouched
                // until `pop_used` returns this token below.
                let token = unsafe {
                    queue.add(
                        &[&headers[slot]],
                        &mut [&mut *chunks[slot], &mut status[slot]],
                    )
                };
                match token {
                    Ok(token) => tokens[slot] = Some(token),
                    Err(e) => {
                        kv!("blkbench.deep", "submit error: {e}");
                        return;
                    }
                }
                submitted += 1;
            }
            // One notification for every request added in this pass, if the device asked.
            if transport.kick(0) {
                kicks += 1;
            }
            let wait = now();
            while !queue.can_pop() {
                core::hint::spin_loop();
            }
            waited += now() - wait;
            while let Some(token) = queue.peek_used() {
                let Some(slot) = tokens.iter().position(|t| *t == Some(token)) else {
                    kv!("blkbench.deep", "unknown completion {token}");
                    return;
                };
                tokens[slot] = None;
                // SAFETY: the same buffers `add` got for `token`.
                let popped = unsafe {
                    queue.pop_used(
                        token,
                        &[&headers[slot]],
                        &mut [&mut *chunks[slot], &mut status[slot]],
                    )
                };
                if let Err(e) = popped {
                    kv!("blkbench.deep", "completion error: {e}");
                    return;
                }
                if status[slot][0] != 0 {
                    kv!(
                        "blkbench.deep",
                        "read failed with status {}",
                        status[slot][0]
                    );
                    return;
                }
                done += 1;
            }
        }
        kv!(
            core::format_args!("blkbench.deep.qd{depth}"),
            "{RANDOM_OPS},{},{kicks},{waited}",
            now() - t
        );
    }
}
