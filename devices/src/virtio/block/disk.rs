//! The raw image backend: a file (or host block device) addressed in bytes, with
//! positioned vectored I/O so several workers can use it at once, `fdatasync` for flush,
//! and `fallocate` for discard and write-zeroes.
//!
//! The image is opened as its [`CacheMode`] says. With the page cache, a transfer can be
//! tried without blocking ([`DiskFile::try_read_vectored_at`]: `RWF_NOWAIT`), which is how
//! the device thread serves cached data itself. With `O_DIRECT` ([`CacheMode::None`]) the
//! file system's alignment rules ([`DirectAlign`], from `statx`) apply to every transfer;
//! callers bounce buffers that break them.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use thiserror::Error;

use super::cache::CacheMode;
use super::request::{SECTOR_SHIFT, SECTOR_SIZE};

/// Most iovecs one `preadv`/`pwritev` takes (Linux IOV_MAX).
pub(super) const IOV_MAX: usize = 1024;
/// Zeroes written when the filesystem cannot zero a range itself.
static ZEROES: [u8; 64 * 1024] = [0; 64 * 1024];

/// Errors opening a disk image.
#[derive(Debug, Error)]
pub enum DiskError {
    /// The image could not be opened.
    #[error("Failed to open disk image {path}")]
    Open {
        /// Image path.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Another process (or VM) has the image open in a conflicting way.
    #[error("Disk image {0} is in use (locked by another VM)")]
    Locked(String),
    /// `cache: none` asked for `O_DIRECT`, which the image's file system does not support.
    #[error("Disk image {0} is on a file system without O_DIRECT (cache mode none)")]
    DirectUnsupported(String),
    /// The image size could not be determined.
    #[error("Failed to get the size of disk image {path}")]
    Size {
        /// Image path.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// An open raw disk image.
///
/// ```
/// use devices::virtio::block::DiskFile;
/// let dir = std::env::temp_dir().join(format!("disk-doc-{}", std::process::id()));
/// std::fs::write(&dir, vec![0u8; 4096]).unwrap();
/// use devices::virtio::block::CacheMode;
/// let disk = DiskFile::open(&dir, true, Some(CacheMode::Writeback)).unwrap();
/// assert_eq!(disk.capacity_sectors(), 8);
/// assert!(disk.read_only());
/// assert_eq!(disk.cache_mode(), CacheMode::Writeback);
/// std::fs::remove_file(&dir).unwrap();
/// ```
#[derive(Debug)]
pub struct DiskFile {
    file: File,
    read_only: bool,
    capacity: u64,
    cache: CacheMode,
    /// `O_DIRECT`'s alignment rules, with [`CacheMode::None`].
    direct: Option<DirectAlign>,
    /// Whether `RWF_NOWAIT` may succeed for reads and for writes (cleared when the file
    /// system turns it down, so a refused attempt is not paid again per request).
    nowait_read: AtomicBool,
    nowait_write: AtomicBool,
}

impl AsRawFd for DiskFile {
    /// The open image (io_uring registers it).
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// What `O_DIRECT` demands of a transfer on this file (`statx`'s `STATX_DIOALIGN`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectAlign {
    /// Every buffer's address and length: a multiple of this (a power of two).
    pub memory: usize,
    /// The file offset and total length: a multiple of this (a power of two).
    pub offset: u64,
}

impl DirectAlign {
    /// Whether `iovecs` are buffers `O_DIRECT` accepts as they are.
    pub fn memory_aligned(&self, iovecs: &[libc::iovec]) -> bool {
        let mask = self.memory - 1;
        iovecs
            .iter()
            .all(|v| (v.iov_base as usize) & mask == 0 && v.iov_len & mask == 0)
    }

    /// Whether a transfer of `len` bytes at `offset` is one `O_DIRECT` accepts.
    pub fn range_aligned(&self, offset: u64, len: u64) -> bool {
        let mask = self.offset - 1;
        offset & mask == 0 && len & mask == 0
    }
}

/// The file's `O_DIRECT` alignment, or the logical sector size and a page where the
/// kernel does not say (before Linux 6.1, or a file system that does not report it).
fn direct_align(file: &File) -> DirectAlign {
    // SAFETY: statx is plain data; all-zero is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: an empty, NUL-terminated path with AT_EMPTY_PATH names the fd itself; `stx`
    // is a valid statx buffer for the call.
    let ret = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    let fallback = DirectAlign {
        memory: 4096,
        offset: SECTOR_SIZE,
    };
    if ret != 0 || stx.stx_mask & libc::STATX_DIOALIGN == 0 {
        return fallback;
    }
    let (memory, offset) = (stx.stx_dio_mem_align, stx.stx_dio_offset_align);
    if !memory.is_power_of_two() || !offset.is_power_of_two() {
        return fallback;
    }
    DirectAlign {
        memory: memory as usize,
        offset: u64::from(offset).max(SECTOR_SIZE),
    }
}

/// Drops what the host page cache holds of an image this VM opened with `O_DIRECT` to write
/// it (and holds the writer's lock on), e.g. pages left by a `writeback` run or by whoever
/// wrote the image. This VM never reads them, and they make every `O_DIRECT` write over
/// them block: the write must first invalidate them, which a non-blocking attempt
/// (io_uring's first try, `IOCB_NOWAIT`) refuses with `EAGAIN`, so io_uring hands such a
/// write to one of its kernel workers, a thread that must be scheduled on a host where the
/// vCPU and device threads keep the cores busy (measured on the development machine: 167
/// of 1024 sequential 64 KiB writes handed over, 305 µs each on average against 95 µs,
/// 35 ms more per 64 MiB). Clean pages go at once, dirty ones are only queued for
/// writeback (the kernel still invalidates them per write then); a refusal (no such thing
/// for a regular file) leaves them to that per-write path.
fn drop_page_cache(file: &File) {
    // SAFETY: posix_fadvise only takes integers and an fd we own.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

fn open_with(path: &Path, read_only: bool, flags: libc::c_int) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(!read_only)
        .custom_flags(flags)
        .open(path)
}

fn flags_of(cache: CacheMode) -> libc::c_int {
    match cache {
        CacheMode::None => libc::O_DIRECT,
        CacheMode::Writethrough => libc::O_DSYNC,
        CacheMode::Writeback => 0,
    }
}

impl DiskFile {
    /// Gives up the image lock now, for the next VM that opens the image; call it only
    /// when nothing reads or writes through this file any more. Without it the lock lasts
    /// as long as the open file, and an io_uring that had the file registered lets go of
    /// it in the background some time after the ring is closed. Only this process's
    /// claim goes; a failure (there is none for a valid fd) leaves the lock to the close.
    pub fn unlock(&self) {
        // SAFETY: flock only takes integers and an fd we own.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }

    /// Opens `path`, read-only or read-write, with the page cache as `cache` says; with
    /// no mode, as KubeVirt's default: `none` where the file system supports `O_DIRECT`,
    /// else `writethrough`. The capacity is the size rounded down to whole sectors (a
    /// trailing partial sector is not addressable).
    pub fn open(path: &Path, read_only: bool, cache: Option<CacheMode>) -> Result<Self, DiskError> {
        let display = path.display().to_string();
        let open_error = |source| DiskError::Open {
            path: display.clone(),
            source,
        };
        // open(2) answers EINVAL for O_DIRECT on a file system without it (tmpfs before
        // Linux 6.6, some FUSE and network file systems).
        let unsupported = |e: &io::Error| e.raw_os_error() == Some(libc::EINVAL);
        let (mut file, cache) = match cache {
            Some(CacheMode::None) => match open_with(path, read_only, libc::O_DIRECT) {
                Ok(f) => (f, CacheMode::None),
                Err(e) if unsupported(&e) => return Err(DiskError::DirectUnsupported(display)),
                Err(e) => return Err(open_error(e)),
            },
            Some(mode) => (
                open_with(path, read_only, flags_of(mode)).map_err(open_error)?,
                mode,
            ),
            None => match open_with(path, read_only, libc::O_DIRECT) {
                Ok(f) => (f, CacheMode::None),
                Err(e) if unsupported(&e) => (
                    open_with(path, read_only, flags_of(CacheMode::Writethrough))
                        .map_err(open_error)?,
                    CacheMode::Writethrough,
                ),
                Err(e) => return Err(open_error(e)),
            },
        };
        // Like QEMU's image locking: one writer or several readers, never both, so two
        // VMs cannot corrupt one disk. The lock lives as long as the open file.
        let mode = if read_only {
            libc::LOCK_SH
        } else {
            libc::LOCK_EX
        };
        // SAFETY: flock only takes integers and an fd we own.
        if unsafe { libc::flock(file.as_raw_fd(), mode | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            return Err(if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                DiskError::Locked(display)
            } else {
                DiskError::Open {
                    path: display,
                    source: e,
                }
            });
        }
        // Seeking to the end works for regular files and block devices alike.
        let size = file
            .seek(SeekFrom::End(0))
            .map_err(|source| DiskError::Size {
                path: display,
                source,
            })?;
        let direct = (cache == CacheMode::None).then(|| direct_align(&file));
        if direct.is_some() && !read_only {
            drop_page_cache(&file);
        }
        Ok(DiskFile {
            file,
            read_only,
            capacity: size >> SECTOR_SHIFT,
            cache,
            direct,
            nowait_read: AtomicBool::new(cache.uses_page_cache()),
            // An O_DSYNC write always waits for the disk.
            nowait_write: AtomicBool::new(cache == CacheMode::Writeback),
        })
    }

    /// The cache mode the image is open with.
    pub fn cache_mode(&self) -> CacheMode {
        self.cache
    }

    /// `O_DIRECT`'s alignment rules, if the image is open with `O_DIRECT`.
    pub fn direct_align(&self) -> Option<DirectAlign> {
        self.direct
    }

    /// Whether a non-blocking read (or write) may succeed on this image at all.
    pub fn may_try_nowait(&self, write: bool) -> bool {
        if write {
            self.nowait_write.load(Ordering::Relaxed)
        } else {
            self.nowait_read.load(Ordering::Relaxed)
        }
    }

    /// Tries to read all of `iovecs` from byte `offset` without blocking (`RWF_NOWAIT`):
    /// true if it did; false if the data is not all in the page cache, the file system
    /// does not do non-blocking reads, or the read failed (the caller then does the
    /// blocking read, which reports the error). Never true for an `O_DIRECT` image.
    ///
    /// # Safety
    /// Every iovec must describe memory writable for its whole length for the duration of
    /// the call.
    pub unsafe fn try_read_vectored_at(&self, iovecs: &[libc::iovec], offset: u64) -> bool {
        // SAFETY: the caller's contract.
        unsafe { self.try_transfer(iovecs, offset, false) }
    }

    /// Tries to write all of `iovecs` at byte `offset` without blocking, like
    /// [`Self::try_read_vectored_at`]; only ever true in `writeback` mode. A false after
    /// a partial write leaves the rest to the caller's blocking write of the whole range.
    ///
    /// # Safety
    /// Every iovec must describe readable memory for its whole length for the duration of
    /// the call.
    pub unsafe fn try_write_vectored_at(&self, iovecs: &[libc::iovec], offset: u64) -> bool {
        // SAFETY: the caller's contract.
        unsafe { self.try_transfer(iovecs, offset, true) }
    }

    /// # Safety
    /// See [`Self::try_read_vectored_at`] / [`Self::try_write_vectored_at`].
    unsafe fn try_transfer(&self, iovecs: &[libc::iovec], offset: u64, write: bool) -> bool {
        let enabled = if write {
            &self.nowait_write
        } else {
            &self.nowait_read
        };
        if !enabled.load(Ordering::Relaxed) || iovecs.is_empty() || iovecs.len() > IOV_MAX {
            return false;
        }
        let Ok(file_offset) = libc::off_t::try_from(offset) else {
            return false;
        };
        let wanted: usize = iovecs.iter().map(|v| v.iov_len).sum();
        let count = iovecs.len() as libc::c_int;
        let fd = self.file.as_raw_fd();
        let done = if write {
            // SAFETY: `count` iovecs of readable memory (caller's contract); the fd is open
            // for the lifetime of `self`.
            unsafe { libc::pwritev2(fd, iovecs.as_ptr(), count, file_offset, libc::RWF_NOWAIT) }
        } else {
            // SAFETY: as above, with the iovecs writable.
            unsafe { libc::preadv2(fd, iovecs.as_ptr(), count, file_offset, libc::RWF_NOWAIT) }
        };
        if done < 0 {
            let errno = io::Error::last_os_error().raw_os_error();
            if matches!(errno, Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)) {
                // This file system (or kernel) never does it: stop trying.
                enabled.store(false, Ordering::Relaxed);
            }
            return false;
        }
        done as usize == wanted
    }

    /// Size in 512-byte sectors.
    pub fn capacity_sectors(&self) -> u64 {
        self.capacity
    }

    /// Whether the image was opened read-only.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Reads into `iovecs` from byte `offset`, all or nothing.
    ///
    /// # Safety
    /// Every iovec must describe memory writable for its whole length for the duration of
    /// the call.
    pub unsafe fn read_vectored_at(
        &self,
        iovecs: &mut [libc::iovec],
        offset: u64,
    ) -> io::Result<()> {
        // SAFETY: the caller guarantees the iovecs are valid writable memory.
        unsafe { self.transfer(iovecs, offset, false) }
    }

    /// Writes `iovecs` at byte `offset`, all or nothing.
    ///
    /// # Safety
    /// Every iovec must describe readable memory for its whole length for the duration of
    /// the call.
    pub unsafe fn write_vectored_at(
        &self,
        iovecs: &mut [libc::iovec],
        offset: u64,
    ) -> io::Result<()> {
        // SAFETY: the caller guarantees the iovecs are valid readable memory.
        unsafe { self.transfer(iovecs, offset, true) }
    }

    /// # Safety
    /// See [`Self::read_vectored_at`] / [`Self::write_vectored_at`].
    unsafe fn transfer(
        &self,
        mut iovecs: &mut [libc::iovec],
        mut offset: u64,
        write: bool,
    ) -> io::Result<()> {
        while !iovecs.is_empty() {
            let count = iovecs.len().min(IOV_MAX) as libc::c_int;
            let file_offset = libc::off_t::try_from(offset)
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            let done = if write {
                // SAFETY: `count` iovecs starting at `iovecs.as_ptr()` are valid readable
                // memory (caller's contract); the fd is open for the lifetime of `self`.
                unsafe { libc::pwritev(self.file.as_raw_fd(), iovecs.as_ptr(), count, file_offset) }
            } else {
                // SAFETY: as above, with the iovecs writable.
                unsafe { libc::preadv(self.file.as_raw_fd(), iovecs.as_ptr(), count, file_offset) }
            };
            if done < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if done == 0 {
                return Err(io::Error::from(if write {
                    io::ErrorKind::WriteZero
                } else {
                    io::ErrorKind::UnexpectedEof
                }));
            }
            // `done` is positive and at most the sum of the iovec lengths.
            let mut done = done as usize;
            offset += done as u64;
            while let Some(first) = iovecs.first_mut() {
                if done < first.iov_len {
                    first.iov_base = (first.iov_base as *mut u8).wrapping_add(done).cast();
                    first.iov_len -= done;
                    break;
                }
                done -= first.iov_len;
                iovecs = &mut iovecs[1..];
            }
        }
        Ok(())
    }

    /// Makes completed writes durable.
    pub fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn fallocate(&self, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
        let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len))
        else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        loop {
            // SAFETY: fallocate only takes integers and an fd open for `self`'s lifetime.
            let ret = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, offset, len) };
            if ret == 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Deallocates `len` bytes at `offset` (they then read as zeroes). Discard is a hint:
    /// a backend that cannot punch holes succeeds without doing anything.
    pub fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        match self.fallocate(
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        ) {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(()),
            other => other,
        }
    }

    /// Zeroes `len` bytes at `offset`: by punching a hole if `unmap`, else by
    /// FALLOC_FL_ZERO_RANGE, falling back to writing zeroes where unsupported.
    pub fn write_zeroes(&self, offset: u64, len: u64, unmap: bool) -> io::Result<()> {
        let mode = if unmap {
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE
        } else {
            libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE
        };
        match self.fallocate(mode, offset, len) {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                self.write_zeroes_slowly(offset, len)
            }
            other => other,
        }
    }

    fn write_zeroes_slowly(&self, mut offset: u64, len: u64) -> io::Result<()> {
        let end = offset
            .checked_add(len)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        while offset < end {
            let n = (end - offset).min(ZEROES.len() as u64) as usize;
            let mut iov = [libc::iovec {
                iov_base: ZEROES.as_ptr() as *mut libc::c_void,
                iov_len: n,
            }];
            // SAFETY: the iovec points into a static buffer of at least `n` bytes that
            // pwritev only reads.
            unsafe { self.transfer(&mut iov, offset, true)? };
            offset += n as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;
    use vmm_sys_util::tempfile::TempFile;

    #[test]
    fn one_writer_or_many_readers() {
        let image = TempFile::new().unwrap();
        image.as_file().set_len(4096).unwrap();
        let path = image.as_path();
        let wb = Some(CacheMode::Writeback);
        let writer = DiskFile::open(path, false, wb).unwrap();
        assert!(matches!(
            DiskFile::open(path, false, wb),
            Err(DiskError::Locked(_))
        ));
        assert!(matches!(
            DiskFile::open(path, true, wb),
            Err(DiskError::Locked(_))
        ));
        drop(writer);
        let r1 = DiskFile::open(path, true, wb).unwrap();
        let _r2 = DiskFile::open(path, true, wb).unwrap();
        assert!(matches!(
            DiskFile::open(path, false, wb),
            Err(DiskError::Locked(_))
        ));
        assert_eq!(r1.capacity_sectors(), 8);
    }

    #[test]
    fn vectored_io_round_trip_and_zeroing() {
        let image = TempFile::new().unwrap();
        image.as_file().set_len(1 << 20).unwrap();
        let disk = DiskFile::open(image.as_path(), false, Some(CacheMode::Writeback)).unwrap();
        let mut a = vec![7u8; 1000];
        let mut b = vec![9u8; 3000];
        let mut iov = [
            libc::iovec {
                iov_base: a.as_mut_ptr().cast(),
                iov_len: a.len(),
            },
            libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            },
        ];
        // SAFETY: the iovecs cover `a` and `b`, alive and unaliased for the call.
        unsafe { disk.write_vectored_at(&mut iov, 512).unwrap() };
        let mut out = vec![0u8; 4000];
        let mut iov = [libc::iovec {
            iov_base: out.as_mut_ptr().cast(),
            iov_len: out.len(),
        }];
        // SAFETY: as above, for `out`.
        unsafe { disk.read_vectored_at(&mut iov, 512).unwrap() };
        assert_eq!(&out[..1000], &a[..]);
        assert_eq!(&out[1000..], &b[..]);
        disk.write_zeroes(1024, 1024, false).unwrap();
        disk.discard(2048, 1024).unwrap();
        // SAFETY: as above, for `out`.
        unsafe { disk.read_vectored_at(&mut iov, 512).unwrap() };
        assert_eq!(&out[512..2560], &vec![0u8; 2048][..]);
        disk.flush().unwrap();
        // Reading past the end of the image fails rather than returning short data.
        let mut tail = [libc::iovec {
            iov_base: out.as_mut_ptr().cast(),
            iov_len: out.len(),
        }];
        // SAFETY: as above, for `out`.
        let past = unsafe { disk.read_vectored_at(&mut tail, (1 << 20) - 100) };
        assert!(past.is_err());
    }

    fn open_flags(disk: &DiskFile) -> libc::c_int {
        // SAFETY: F_GETFL only reads the flags of an open fd.
        unsafe { libc::fcntl(disk.file.as_raw_fd(), libc::F_GETFL) }
    }

    #[test]
    fn cache_modes_open_the_image_accordingly() {
        // A disk-backed file system: the temporary directory (ext4 here and in CI).
        let image = TempFile::new().unwrap();
        image.as_file().set_len(1 << 20).unwrap();
        let path = image.as_path();
        let direct = DiskFile::open(path, false, Some(CacheMode::None)).unwrap();
        assert_ne!(open_flags(&direct) & libc::O_DIRECT, 0);
        let align = direct.direct_align().expect("O_DIRECT rules");
        assert!(align.memory.is_power_of_two() && align.offset >= SECTOR_SIZE);
        assert!(!direct.may_try_nowait(false) && !direct.may_try_nowait(true));
        drop(direct);
        // KubeVirt's default where O_DIRECT works: none.
        let default = DiskFile::open(path, false, None).unwrap();
        assert_eq!(default.cache_mode(), CacheMode::None);
        drop(default);
        let through = DiskFile::open(path, false, Some(CacheMode::Writethrough)).unwrap();
        assert_eq!(open_flags(&through) & libc::O_DIRECT, 0);
        assert_eq!(open_flags(&through) & libc::O_DSYNC, libc::O_DSYNC);
        assert!(through.direct_align().is_none());
        assert!(through.may_try_nowait(false) && !through.may_try_nowait(true));
        drop(through);
        let back = DiskFile::open(path, false, Some(CacheMode::Writeback)).unwrap();
        assert_eq!(open_flags(&back) & (libc::O_DIRECT | libc::O_DSYNC), 0);
        assert!(back.may_try_nowait(false) && back.may_try_nowait(true));
    }

    /// Whether all of `file`'s first `len` bytes are in the page cache (a non-blocking read
    /// of them succeeds).
    fn cached(file: &File, len: usize) -> bool {
        let mut out = vec![0u8; len];
        let iov = libc::iovec {
            iov_base: out.as_mut_ptr().cast(),
            iov_len: len,
        };
        // SAFETY: one iovec over `out`, alive and unaliased for the call.
        let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, 0, libc::RWF_NOWAIT) };
        n == len as isize
    }

    #[test]
    #[cfg_attr(
        any(target_arch = "s390x", target_arch = "powerpc64"),
        ignore = "qemu-user 7.2 does not pass preadv2(RWF_NOWAIT) through; run with --include-ignored on real hardware"
    )]
    fn a_direct_writer_drops_the_images_cached_pages() {
        // A file system with a page cache the kernel can drop: the temporary directory,
        // unless it is tmpfs (whose pages are the files themselves), else this crate's
        // directory in the checkout.
        let fs_type = |dir: &std::path::Path| {
            let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: statfs is plain data; all-zero is a valid value.
            let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
            // SAFETY: a NUL-terminated path and a statfs buffer, both alive for the call.
            assert_eq!(unsafe { libc::statfs(path.as_ptr(), &mut fs) }, 0);
            fs.f_type
        };
        let mut dir = std::env::temp_dir();
        if fs_type(&dir) == libc::TMPFS_MAGIC {
            dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        }
        let image = TempFile::new_in(&dir).unwrap();
        let file = image.as_file();
        file.write_all_at(&[0x5a; 1 << 16], 0).unwrap();
        // Clean pages, which the kernel drops at once.
        file.sync_all().unwrap();
        assert!(
            cached(file, 1 << 16),
            "{} keeps no page cache for a file just written",
            dir.display()
        );
        // A reader with O_DIRECT leaves others' cache alone.
        let reader = DiskFile::open(image.as_path(), true, Some(CacheMode::None)).unwrap();
        assert!(cached(file, 1 << 16));
        drop(reader);
        let _writer = DiskFile::open(image.as_path(), false, Some(CacheMode::None)).unwrap();
        assert!(!cached(file, 1 << 16));
    }

    #[test]
    #[cfg_attr(
        any(target_arch = "s390x", target_arch = "powerpc64"),
        ignore = "qemu-user 7.2 does not pass preadv2(RWF_NOWAIT) through; run with --include-ignored on real hardware"
    )]
    fn nowait_reads_hit_the_page_cache() {
        let image = TempFile::new().unwrap();
        image.as_file().write_all_at(&[0xa5; 8192], 0).unwrap();
        let disk = DiskFile::open(image.as_path(), false, Some(CacheMode::Writeback)).unwrap();
        let mut out = vec![0u8; 8192];
        let iov = [libc::iovec {
            iov_base: out.as_mut_ptr().cast(),
            iov_len: out.len(),
        }];
        // SAFETY: the iovec covers `out`, alive and unaliased for the call.
        assert!(unsafe { disk.try_read_vectored_at(&iov, 0) });
        assert_eq!(out, vec![0xa5; 8192]);
        // Past the end: a short read, left to the blocking path.
        // SAFETY: as above.
        assert!(!unsafe { disk.try_read_vectored_at(&iov, 4096) });
    }
}
