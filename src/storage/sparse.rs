//! Sparse files: [`SparseWriter`] writes a stream into a file leaving holes where whole
//! blocks are zero (so a 20 GiB image that holds 1 GiB takes 1 GiB on disk), and
//! [`copy`] copies a file's data ranges only (SEEK_DATA/SEEK_HOLE with `copy_file_range`,
//! which shares extents on filesystems that can).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

/// The granule of hole detection: a filesystem block.
pub const BLOCK: usize = 4096;

/// Writes a stream into a file from offset 0, seeking over all-zero blocks.
#[derive(Debug)]
pub struct SparseWriter {
    file: tokio::fs::File,
    /// Bytes of the stream so far (the logical end of the file).
    len: u64,
    /// Where the file's cursor is.
    cursor: u64,
}

impl SparseWriter {
    /// Writes into `file` (new and empty).
    pub fn new(file: tokio::fs::File) -> Self {
        Self {
            file,
            len: 0,
            cursor: 0,
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `buf`, leaving holes for all-zero blocks (block-aligned to the stream).
    pub async fn write(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            // Up to the next block boundary of the stream, so blocks line up with the file;
            // then a run of whole blocks of the same kind, written or skipped at once.
            let first = (BLOCK - (self.len % BLOCK as u64) as usize).min(buf.len());
            let zero = is_zero(&buf[..first]);
            let mut run = first;
            while run < buf.len() {
                let n = BLOCK.min(buf.len() - run);
                if is_zero(&buf[run..run + n]) != zero {
                    break;
                }
                run += n;
            }
            let (data, rest) = buf.split_at(run);
            if !zero {
                if self.cursor != self.len {
                    self.file.seek(io::SeekFrom::Start(self.len)).await?;
                }
                self.file.write_all(data).await?;
                self.cursor = self.len + data.len() as u64;
            }
            self.len += data.len() as u64;
            buf = rest;
        }
        Ok(())
    }

    /// Sets the file's length to the bytes written (trailing holes included) and returns
    /// that length. Not flushed to disk: a scratch image is converted and deleted, and a
    /// volume's image is flushed once it is complete ([`super::import::finalize`]).
    pub async fn finish(mut self) -> io::Result<u64> {
        self.file.flush().await?;
        self.file.set_len(self.len).await?;
        Ok(self.len)
    }
}

/// Whether `b` holds only zero bytes: 64 bytes at a time as eight OR-ed words (which the
/// compiler turns into vector code; a byte-by-byte `all` runs a compare and a branch per
/// byte), stopping at the first 64 bytes with data, then the tail.
pub fn is_zero(b: &[u8]) -> bool {
    let mut lines = b.chunks_exact(64);
    for line in &mut lines {
        let acc = line.chunks_exact(8).fold(0u64, |acc, w| {
            acc | u64::from_ne_bytes(w.try_into().expect("chunks_exact(8) yields 8 bytes"))
        });
        if acc != 0 {
            return false;
        }
    }
    lines.remainder().iter().all(|&x| x == 0)
}

fn seek(fd: i32, offset: u64, whence: i32) -> io::Result<Option<u64>> {
    let off = i64::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: lseek on a file descriptor the caller keeps open; no memory is involved.
    let r = unsafe { libc::lseek(fd, off, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        // ENXIO: no data (or hole) at or after `offset`.
        return if e.raw_os_error() == Some(libc::ENXIO) {
            Ok(None)
        } else {
            Err(e)
        };
    }
    Ok(Some(r as u64))
}

/// Copies `src` to a new file `dst` of the same length, copying only its data ranges (holes
/// stay holes). Blocking: call from a blocking thread.
pub fn copy(src: &Path, dst: &Path) -> io::Result<u64> {
    let from = File::open(src)?;
    let len = from.metadata()?.len();
    let to = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)?;
    to.set_len(len)?;
    let (ifd, ofd) = (from.as_raw_fd(), to.as_raw_fd());
    let mut pos = 0u64;
    while pos < len {
        let Some(data) = seek(ifd, pos, libc::SEEK_DATA)? else {
            break;
        };
        let end = seek(ifd, data, libc::SEEK_HOLE)?.unwrap_or(len).min(len);
        let mut off_in = i64::try_from(data).map_err(|_| io::ErrorKind::InvalidInput)?;
        let mut off_out = off_in;
        let mut left = end - data;
        while left > 0 {
            let chunk = usize::try_from(left.min(1 << 30)).unwrap_or(1 << 30);
            // SAFETY: both fds are open for the call; the offsets are plain integers the
            // kernel reads and advances; no user memory is passed.
            let n = unsafe { libc::copy_file_range(ifd, &mut off_in, ofd, &mut off_out, chunk, 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the source shrank while being copied",
                ));
            }
            left -= n as u64;
        }
        pos = end;
    }
    to.sync_all()?;
    Ok(len)
}

/// Bytes a file really occupies on disk.
pub fn allocated(path: &Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(path)?.blocks() * 512)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn zero_blocks_become_holes_and_copies_keep_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        let f = tokio::fs::File::create(&p).await.unwrap();
        let mut w = SparseWriter::new(f);
        let mut data = vec![0u8; 8 << 20];
        data[100] = 1;
        data[(4 << 20) + 7] = 2;
        // Odd-sized pieces: block alignment follows the stream, not the calls.
        for piece in data.chunks(12345) {
            w.write(piece).await.unwrap();
        }
        w.write(&[0u8; 3]).await.unwrap();
        assert_eq!(w.finish().await.unwrap(), (8 << 20) + 3);
        let back = std::fs::read(&p).unwrap();
        assert_eq!(&back[..8 << 20], &data[..]);
        assert_eq!(back.len(), (8 << 20) + 3);
        assert!(
            allocated(&p).unwrap() < 1 << 20,
            "{}",
            allocated(&p).unwrap()
        );
        let q = dir.path().join("copy");
        assert_eq!(copy(&p, &q).unwrap(), (8 << 20) + 3);
        assert_eq!(std::fs::read(&q).unwrap(), back);
        assert!(allocated(&q).unwrap() < 1 << 20);
    }

    #[test]
    fn is_zero_finds_any_set_byte_wherever_it_is() {
        assert!(is_zero(&[]));
        for len in [1, 7, 63, 64, 65, 4096, 4099] {
            let mut b = vec![0u8; len];
            assert!(is_zero(&b), "{len}");
            for at in [0, len / 2, len - 1] {
                b[at] = 0x80;
                assert!(!is_zero(&b), "{len} @ {at}");
                b[at] = 0;
            }
        }
    }
}
