//! The raw image backend: a file (or host block device) addressed in bytes, with
//! positioned vectored I/O so several workers can use it at once, `fdatasync` for flush,
//! and `fallocate` for discard and write-zeroes.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::Path;

use thiserror::Error;

use super::request::SECTOR_SHIFT;

/// Most iovecs one `preadv`/`pwritev` takes (Linux IOV_MAX).
const IOV_MAX: usize = 1024;
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
/// let disk = DiskFile::open(&dir, true).unwrap();
/// assert_eq!(disk.capacity_sectors(), 8);
/// assert!(disk.read_only());
/// std::fs::remove_file(&dir).unwrap();
/// ```
#[derive(Debug)]
pub struct DiskFile {
    file: File,
    read_only: bool,
    capacity: u64,
}

impl DiskFile {
    /// Opens `path`, read-only or read-write. The capacity is the size rounded down to
    /// whole sectors (a trailing partial sector is not addressable).
    pub fn open(path: &Path, read_only: bool) -> Result<Self, DiskError> {
        let display = path.display().to_string();
        let mut file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|source| DiskError::Open {
                path: display.clone(),
                source,
            })?;
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
        Ok(DiskFile {
            file,
            read_only,
            capacity: size >> SECTOR_SHIFT,
        })
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
    use vmm_sys_util::tempfile::TempFile;

    #[test]
    fn one_writer_or_many_readers() {
        let image = TempFile::new().unwrap();
        image.as_file().set_len(4096).unwrap();
        let path = image.as_path();
        let writer = DiskFile::open(path, false).unwrap();
        assert!(matches!(
            DiskFile::open(path, false),
            Err(DiskError::Locked(_))
        ));
        assert!(matches!(
            DiskFile::open(path, true),
            Err(DiskError::Locked(_))
        ));
        drop(writer);
        let r1 = DiskFile::open(path, true).unwrap();
        let _r2 = DiskFile::open(path, true).unwrap();
        assert!(matches!(
            DiskFile::open(path, false),
            Err(DiskError::Locked(_))
        ));
        assert_eq!(r1.capacity_sectors(), 8);
    }

    #[test]
    fn vectored_io_round_trip_and_zeroing() {
        let image = TempFile::new().unwrap();
        image.as_file().set_len(1 << 20).unwrap();
        let disk = DiskFile::open(image.as_path(), false).unwrap();
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
}
