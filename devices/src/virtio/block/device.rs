//! The virtio-blk device: configuration space, feature offer, activation and reset.

use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;
use virtio_bindings::virtio_blk;
use vm_memory::GuestAddressSpace;

use super::cache::CacheMode;
use super::disk::{DiskError, DiskFile};
use super::metrics::BlockMetrics;
use super::request::{RequestLimits, ID_BYTES};
use super::uring::Uring;
use super::worker_pool::{ThreadInit, WorkerPool};
use crate::virtio::device_type;
use crate::virtio::queue_device::{DeviceCore, QueueDevice};
use crate::virtio::Progress;

/// Queue size offered to the driver.
pub const QUEUE_SIZE: u16 = 256;
/// The most worker threads a disk's pool grows to unless configured otherwise (it starts
/// with one and adds one only while requests wait): with `cache: none` every request
/// waits for the host disk on a worker, so this many can be in flight there (a guest's
/// queue depth of 32 is a common deep queue; QEMU's thread pool allows 64).
pub const DEFAULT_WORKERS: usize = 32;
/// The most requests a disk has at the host at once (io_uring and workers together): a
/// well-behaved driver never has more than a queue's worth outstanding; past it the
/// device leaves further chains in the ring until some complete, so a driver that keeps
/// republishing chains cannot make the host queue work without bound.
pub(super) const MAX_IN_FLIGHT: usize = QUEUE_SIZE as usize;
/// Largest discard / write-zeroes range in sectors (2 GiB).
const MAX_RANGE_SECTORS: u32 = 1 << 22;
/// Largest number of ranges in one discard / write-zeroes request.
const MAX_RANGES: u32 = 32;
/// Discard granularity in sectors (4 KiB, the usual filesystem block).
const DISCARD_ALIGNMENT_SECTORS: u32 = 8;
/// Size of the configuration structure we expose (through `write_zeroes_may_unmap`).
const CONFIG_SIZE: usize = 0x3c;

/// How to build a block device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockConfig {
    /// Name for threads and logs (the KubeVirt disk name).
    pub id: String,
    /// Raw image file or host block device.
    pub path: PathBuf,
    /// Refuse writes (VIRTIO_BLK_F_RO).
    pub read_only: bool,
    /// Serial returned by GET_ID (KubeVirt's disk `serial`), at most 20 bytes.
    pub serial: Option<String>,
    /// Host page-cache mode; `None` picks KubeVirt's default (see [`DiskFile::open`]).
    pub cache: Option<CacheMode>,
    /// I/O worker threads: the most requests in flight at the host disk at once.
    pub workers: usize,
    /// Run first on each worker thread (the VMM's seccomp filter).
    pub worker_init: Option<ThreadInit>,
    /// Read and write through io_uring on the device thread where the kernel allows it
    /// (see [`super::uring`]); the workers take the rest, and everything without it.
    pub io_uring: bool,
}

/// Errors creating a block device.
#[derive(Debug, Error)]
pub enum BlockError {
    /// The image could not be opened.
    #[error("Failed to open the disk image")]
    Disk(#[from] DiskError),
    /// The serial does not fit the 20-byte device ID.
    #[error("Disk serial {0:?} is longer than 20 bytes")]
    SerialTooLong(String),
    /// The worker threads could not be started.
    #[error("Failed to start the I/O workers")]
    Workers(#[source] std::io::Error),
}

/// A virtio-blk device over a raw image.
///
/// ```
/// use std::sync::Arc;
/// use devices::virtio::block::{BlockConfig, BlockDevice};
/// use devices::virtio::VirtioDevice;
/// use vm_memory::GuestMemoryMmap;
///
/// let path = std::env::temp_dir().join(format!("blk-doc-{}", std::process::id()));
/// std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
/// let disk = BlockDevice::<Arc<GuestMemoryMmap>>::new(BlockConfig {
///     id: "rootdisk".into(),
///     path: path.clone(),
///     read_only: false,
///     serial: Some("D23YZ9W6WA5DJ487".into()),
///     cache: None,
///     workers: 1,
///     worker_init: None,
///     io_uring: true,
/// })
/// .unwrap();
/// let mut capacity = [0u8; 8];
/// disk.read_config(0, &mut capacity);
/// assert_eq!(u64::from_le_bytes(capacity), 2048); // sectors
/// std::fs::remove_file(&path).unwrap();
/// ```
pub struct BlockDevice<M: GuestAddressSpace> {
    pub(super) id: String,
    pub(super) disk: Arc<DiskFile>,
    pub(super) serial: [u8; ID_BYTES],
    pub(super) limits: RequestLimits,
    pub(super) pool: WorkerPool<M>,
    /// The io_uring, where the kernel gave one.
    pub(super) uring: Option<Uring<M>>,
    /// The most requests at the host at once ([`MAX_IN_FLIGHT`]).
    pub(super) max_in_flight: usize,
    /// Requests handed to io_uring or the workers whose completion is not published yet.
    pub(super) outstanding: usize,
    /// The device stopped taking chains with `max_in_flight` requests at the host; it
    /// takes them again as completions come in.
    pub(super) throttled: bool,
    pub(super) core: DeviceCore<M>,
    pub(super) metrics: Arc<BlockMetrics>,
}

impl<M: GuestAddressSpace> Drop for BlockDevice<M> {
    fn drop(&mut self) {
        // The image is free for the next VM once no I/O of this one can reach it: the
        // ring idle and closed, the workers gone. Then its lock goes at once, not when the
        // kernel's ring clean-up drops its reference to the file.
        self.uring = None;
        self.pool.shut_down();
        self.disk.unlock();
    }
}

impl<M: GuestAddressSpace> std::fmt::Debug for BlockDevice<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockDevice")
            .field("id", &self.id)
            .field("disk", &self.disk)
            .field("active", &self.core.is_activated())
            .finish_non_exhaustive()
    }
}

impl<M> BlockDevice<M>
where
    M: GuestAddressSpace + Send + 'static,
{
    /// Opens the image and starts the I/O workers.
    pub fn new(config: BlockConfig) -> Result<Self, BlockError> {
        let mut serial = [0u8; ID_BYTES];
        if let Some(s) = &config.serial {
            if s.len() > ID_BYTES {
                return Err(BlockError::SerialTooLong(s.clone()));
            }
            serial[..s.len()].copy_from_slice(s.as_bytes());
        }
        let disk = Arc::new(DiskFile::open(
            &config.path,
            config.read_only,
            config.cache,
        )?);
        let capacity = disk.capacity_sectors();

        let bit = |b: u32| 1u64 << b;
        let mut offered = bit(virtio_blk::VIRTIO_BLK_F_SEG_MAX)
            | bit(virtio_blk::VIRTIO_BLK_F_BLK_SIZE)
            | bit(virtio_blk::VIRTIO_BLK_F_FLUSH);
        if config.read_only {
            offered |= bit(virtio_blk::VIRTIO_BLK_F_RO);
        } else {
            offered |=
                bit(virtio_blk::VIRTIO_BLK_F_DISCARD) | bit(virtio_blk::VIRTIO_BLK_F_WRITE_ZEROES);
        }

        let limits = RequestLimits {
            capacity,
            max_discard_seg: MAX_RANGES,
            max_discard_sectors: MAX_RANGE_SECTORS,
            max_write_zeroes_seg: MAX_RANGES,
            max_write_zeroes_sectors: MAX_RANGE_SECTORS,
        };
        let mut cs = [0u8; CONFIG_SIZE];
        let mut put =
            |offset: usize, bytes: &[u8]| cs[offset..offset + bytes.len()].copy_from_slice(bytes);
        put(0x00, &capacity.to_le_bytes());
        // Header and status take two descriptors of a full queue.
        put(0x0c, &u32::from(QUEUE_SIZE - 2).to_le_bytes());
        // The logical block size: what O_DIRECT needs, else the sector.
        let block_size = disk
            .direct_align()
            .map_or(512, |a| u32::try_from(a.offset).unwrap_or(u32::MAX));
        put(0x14, &block_size.to_le_bytes());
        put(0x22, &1u16.to_le_bytes());
        put(0x24, &MAX_RANGE_SECTORS.to_le_bytes());
        put(0x28, &MAX_RANGES.to_le_bytes());
        put(0x2c, &DISCARD_ALIGNMENT_SECTORS.to_le_bytes());
        put(0x30, &MAX_RANGE_SECTORS.to_le_bytes());
        put(0x34, &MAX_RANGES.to_le_bytes());
        put(0x38, &[1]);

        let pool = WorkerPool::new(
            disk.clone(),
            config.workers,
            &format!("blk-{}", config.id),
            config.worker_init.clone(),
        )
        .map_err(BlockError::Workers)?;
        let uring = if config.io_uring {
            match Uring::new(&disk, u32::from(QUEUE_SIZE)) {
                Ok(ring) => Some(ring),
                Err(e) => {
                    tracing::debug!(disk = %config.id, error = %e, "No io_uring: I/O goes to the workers");
                    None
                }
            }
        } else {
            None
        };
        Ok(BlockDevice {
            id: config.id,
            disk,
            serial,
            limits,
            pool,
            uring,
            max_in_flight: MAX_IN_FLIGHT,
            outstanding: 0,
            throttled: false,
            // Nothing in it is writable (no VIRTIO_BLK_F_CONFIG_WCE).
            core: DeviceCore::new(
                "virtio-blk",
                device_type::BLOCK,
                offered,
                &[QUEUE_SIZE],
                cs.to_vec(),
            ),
            metrics: Arc::new(BlockMetrics::default()),
        })
    }

    /// The device's counters.
    pub fn metrics(&self) -> Arc<BlockMetrics> {
        self.metrics.clone()
    }

    /// The cache mode the image is open with.
    pub fn cache_mode(&self) -> CacheMode {
        self.disk.cache_mode()
    }

    /// Disk size in sectors.
    pub fn capacity_sectors(&self) -> u64 {
        self.disk.capacity_sectors()
    }

    /// Whether reads and writes go through io_uring.
    pub fn uses_io_uring(&self) -> bool {
        self.uring.is_some()
    }
}

impl<M> QueueDevice<M> for BlockDevice<M>
where
    M: GuestAddressSpace + Send + 'static,
    M::T: Send,
{
    fn core(&self) -> &DeviceCore<M> {
        &self.core
    }

    fn core_mut(&mut self) -> &mut DeviceCore<M> {
        &mut self.core
    }

    fn resetting(&mut self) {
        // Wait for requests at the disk: they write guest memory the driver may reuse.
        if let Some(uring) = &mut self.uring {
            uring.wait_idle();
        }
        self.pool.drain();
        self.outstanding = 0;
        self.throttled = false;
    }

    fn own_fds(&self) -> Vec<RawFd> {
        let mut fds = vec![self.pool.completion_event().as_raw_fd()];
        fds.extend(self.uring.as_ref().map(|u| u.event().as_raw_fd()));
        fds
    }

    fn queue_notified(&mut self, index: usize) {
        self.metrics.queue_events.inc();
        self.handle_queue(index);
    }

    fn pollable(&self) -> bool {
        true
    }

    fn set_polling(&mut self, on: bool) -> bool {
        let metrics = self.metrics.clone();
        let core = &mut self.core;
        match core.state.active_mut() {
            Some(active) => active.set_polling(on, &*metrics, &mut core.log),
            None => false,
        }
    }

    fn poll(&mut self) -> Progress {
        self.poll_once()
    }

    fn fd_ready(&mut self, index: usize) {
        match index {
            0 => {
                let _ = self.pool.completion_event().read();
            }
            1 => {
                if let Some(uring) = &self.uring {
                    let _ = uring.event().read();
                }
            }
            _ => return,
        }
        self.publish_completions();
    }
}
