//! The import pipeline (CDI's importer data path): a byte stream (an HTTP body or an
//! upload) → checksum and progress → gunzip/unxz → format detection → the volume's
//! `disk.img`, raw and sparse.
//!
//! Raw and ISO images are written straight into a temporary file beside `disk.img`; other
//! formats land in a scratch file that `qemu-img` measures (refusing an image that names
//! another file: a backing or external data file), then checks while it converts it. The
//! image then grows to the volume's size and is renamed to `disk.img` only when everything
//! succeeded, so a half-imported disk never exists under the name VMs attach. Nothing is
//! held in memory beyond one buffer.

use super::checksum::{Checksum, Hasher};
use super::format::{self, Compression, Format};
use super::qemu_img::{self, QemuImgError};
use super::sparse::SparseWriter;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, BufReader, ReadBuf};

/// The file name of a volume's disk image inside its directory (KubeVirt's convention for
/// filesystem PVCs).
pub const DISK_IMG: &str = "disk.img";
/// The in-progress image beside `disk.img`.
pub const PARTIAL: &str = "disk.img.part";
/// The downloaded image awaiting conversion.
pub const SCRATCH: &str = "scratch.img";

const BUF: usize = 1 << 20;

/// How far a transfer is: bytes read of the source and, when known, its size.
#[derive(Debug, Default)]
pub struct Progress {
    done: AtomicU64,
    /// 0 when unknown.
    total: AtomicU64,
}

impl Progress {
    /// Bytes read so far.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Records the source's size.
    pub fn set_total(&self, total: Option<u64>) {
        self.total.store(total.unwrap_or(0), Ordering::Relaxed);
    }

    /// Starts counting again (a retried transfer).
    pub fn reset(&self) {
        self.done.store(0, Ordering::Relaxed);
    }

    /// CDI's progress string, `"45.67%"`, or `None` when the size is unknown.
    ///
    /// ```
    /// let p = monovirt::storage::import::Progress::default();
    /// assert_eq!(p.percent(), None);
    /// p.set_total(Some(3));
    /// assert_eq!(p.percent().as_deref(), Some("0.00%"));
    /// ```
    pub fn percent(&self) -> Option<String> {
        let total = self.total.load(Ordering::Relaxed);
        (total > 0).then(|| {
            let done = self.done().min(total);
            format!("{:.2}%", done as f64 * 100.0 / total as f64)
        })
    }
}

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The source failed mid-transfer (connection reset, body cut short).
    #[error("Reading the source failed: {0}")]
    Source(#[source] io::Error),
    #[error("Unable to process data: the {0:?} stream is corrupt: {1}")]
    Decompress(Compression, #[source] io::Error),
    #[error("The source is not a disk image: {0}")]
    NotAnImage(String),
    #[error("The image's virtual size {size} bytes is larger than the volume's {capacity} bytes")]
    TooLarge { size: u64, capacity: u64 },
    #[error("Checksum mismatch: expected {expected}, the download has {actual}")]
    Checksum { expected: Checksum, actual: String },
    #[error("No space left on the filesystem of {0}")]
    DiskFull(PathBuf),
    #[error("Writing {0} failed")]
    Write(PathBuf, #[source] io::Error),
    #[error("The image refers to another file ({0}); an imported image must hold all its data")]
    ExternalFile(String),
    #[error("The {0} image is damaged or unreadable")]
    Damaged(Format, #[source] QemuImgError),
    #[error("Converting the {0} image to raw failed")]
    Convert(Format, #[source] QemuImgError),
}

impl ImportError {
    /// Whether trying again may succeed (a network failure) rather than fail the same way.
    pub fn retryable(&self) -> bool {
        matches!(self, Self::Source(_))
    }
}

/// What an import produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub compression: Option<Compression>,
    pub format: Format,
    /// The image's own size before growing to the volume.
    pub virtual_size: u64,
    /// Bytes read from the source.
    pub transferred: u64,
}

/// Marks an error as the source's, so it is told apart from decoder errors after passing
/// through a decompressor.
#[derive(Debug)]
struct SourceFailure(io::Error);

impl std::fmt::Display for SourceFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SourceFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Counts and hashes what passes through.
struct Metered<R> {
    inner: R,
    progress: Arc<Progress>,
    hasher: Arc<Mutex<Option<Hasher>>>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Metered<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                self.progress
                    .done
                    .fetch_add(new.len() as u64, Ordering::Relaxed);
                if let Some(h) = self
                    .hasher
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_mut()
                {
                    h.update(new);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(io::Error::new(e.kind(), SourceFailure(e)))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
async fn fill<R: AsyncRead + Unpin + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]).await? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn is_disk_full(e: &io::Error) -> bool {
    // Buffered and async writers may wrap the OS error or report only its kind.
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
        || matches!(
            e.kind(),
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
        )
        || e.get_ref()
            .and_then(|inner| inner.downcast_ref::<io::Error>())
            .is_some_and(is_disk_full)
}

/// Sorts a read error of the (decompressed) stream.
fn read_error(e: io::Error, compression: Option<Compression>) -> ImportError {
    if e.get_ref().is_some_and(|inner| inner.is::<SourceFailure>()) {
        return ImportError::Source(e);
    }
    match compression {
        Some(c) => ImportError::Decompress(c, e),
        None => ImportError::Source(e),
    }
}

/// Where an import writes inside a volume's directory.
#[derive(Debug, Clone)]
pub struct Target {
    pub dir: PathBuf,
    /// The volume's size: the image may not be larger; a smaller one grows to it.
    pub capacity: u64,
}

impl Target {
    pub fn disk(&self) -> PathBuf {
        self.dir.join(DISK_IMG)
    }

    pub fn partial(&self) -> PathBuf {
        self.dir.join(PARTIAL)
    }

    pub fn scratch(&self) -> PathBuf {
        self.dir.join(SCRATCH)
    }

    /// Removes what a failed or abandoned import left (never `disk.img`).
    pub fn clean(&self) {
        for p in [self.partial(), self.scratch()] {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(path = %p.display(), "cannot remove: {e}"),
            }
        }
    }
}

/// Imports `source` into `target` (see the module docs). `progress` counts the source's
/// bytes; `checksum`, when given, must match them. On failure nothing is left behind.
pub async fn import<R: AsyncRead + Unpin + Send + 'static>(
    source: R,
    target: &Target,
    checksum: Option<&Checksum>,
    progress: Arc<Progress>,
) -> Result<Imported, ImportError> {
    target.clean();
    let result = run(source, target, checksum, progress).await;
    if result.is_err() {
        target.clean();
    }
    result
}

async fn create(path: &Path) -> Result<tokio::fs::File, ImportError> {
    tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .await
        .map_err(|e| write_error(path, e))
}

fn write_error(path: &Path, e: io::Error) -> ImportError {
    if is_disk_full(&e) {
        ImportError::DiskFull(path.to_path_buf())
    } else {
        ImportError::Write(path.to_path_buf(), e)
    }
}

async fn run<R: AsyncRead + Unpin + Send + 'static>(
    source: R,
    target: &Target,
    checksum: Option<&Checksum>,
    progress: Arc<Progress>,
) -> Result<Imported, ImportError> {
    let hasher = Arc::new(Mutex::new(checksum.map(|c| Hasher::new(c.algorithm))));
    let mut metered = Metered {
        inner: source,
        progress: progress.clone(),
        hasher: hasher.clone(),
    };
    let mut head = vec![0u8; format::HEADER_LEN];
    let n = fill(&mut metered, &mut head)
        .await
        .map_err(|e| read_error(e, None))?;
    head.truncate(n);
    let compression = format::detect_compression(&head);
    let raw_stream = std::io::Cursor::new(head).chain(metered);
    let mut stream: Box<dyn AsyncRead + Unpin + Send> = match compression {
        None => Box::new(raw_stream),
        Some(Compression::Gzip) => {
            let mut d = async_compression::tokio::bufread::GzipDecoder::new(
                BufReader::with_capacity(BUF, raw_stream),
            );
            d.multiple_members(true);
            Box::new(d)
        }
        Some(Compression::Xz) => {
            let mut d = async_compression::tokio::bufread::XzDecoder::new(
                BufReader::with_capacity(BUF, raw_stream),
            );
            d.multiple_members(true);
            Box::new(d)
        }
    };
    let mut buf = vec![0u8; BUF.max(format::HEADER_LEN)];
    let first = fill(&mut stream, &mut buf)
        .await
        .map_err(|e| read_error(e, compression))?;
    if first == 0 {
        return Err(ImportError::NotAnImage("the source is empty".into()));
    }
    let format = match format::detect(&buf[..first]) {
        Some(f) => f,
        None if format::looks_like_text(&buf[..first]) => {
            let shown: String = String::from_utf8_lossy(&buf[..first.min(40)])
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            return Err(ImportError::NotAnImage(format!(
                "it starts with text ({:?}), not a known image format or a raw disk",
                shown.trim()
            )));
        }
        None => Format::Raw,
    };
    // Raw images go straight to the partial disk (bounded by the volume); others to scratch.
    let dest = if format.is_raw() {
        target.partial()
    } else {
        target.scratch()
    };
    let mut writer = SparseWriter::new(create(&dest).await?);
    let mut chunk = first;
    loop {
        if format.is_raw() && writer.len() + chunk as u64 > target.capacity {
            return Err(ImportError::TooLarge {
                size: writer.len() + chunk as u64,
                capacity: target.capacity,
            });
        }
        writer
            .write(&buf[..chunk])
            .await
            .map_err(|e| write_error(&dest, e))?;
        chunk = fill(&mut stream, &mut buf)
            .await
            .map_err(|e| read_error(e, compression))?;
        if chunk == 0 {
            break;
        }
    }
    drop(stream);
    let written = writer.finish().await.map_err(|e| write_error(&dest, e))?;
    let transferred = progress.done();
    if let (Some(expected), Some(h)) = (
        checksum,
        hasher.lock().unwrap_or_else(|e| e.into_inner()).take(),
    ) {
        let actual = h.finish_hex();
        if actual != expected.hex {
            return Err(ImportError::Checksum {
                expected: expected.clone(),
                actual,
            });
        }
    }
    let virtual_size = if format.is_raw() {
        if written % 512 != 0 {
            return Err(ImportError::NotAnImage(format!(
                "a raw image of {written} bytes is not a whole number of 512-byte sectors \
                 (a truncated download?)"
            )));
        }
        written
    } else {
        let info = qemu_img::info(&dest, format)
            .await
            .map_err(|e| ImportError::Damaged(format, e))?;
        if let Some(file) = info.external_file() {
            return Err(ImportError::ExternalFile(file.to_string()));
        }
        if info.virtual_size > target.capacity {
            return Err(ImportError::TooLarge {
                size: info.virtual_size,
                capacity: target.capacity,
            });
        }
        // The check and the conversion only read the image: the conversion runs while the
        // check does, and its output is kept only if the image passes the check (a
        // truncated qcow2 converts without an error, its missing clusters read as zeros).
        let partial = target.partial();
        let (checked, converted) = tokio::join!(
            qemu_img::check(&dest, format),
            qemu_img::convert_to_raw(&dest, format, &partial)
        );
        checked.map_err(|e| ImportError::Damaged(format, e))?;
        converted.map_err(|e| {
            if e.is_disk_full() {
                ImportError::DiskFull(partial.clone())
            } else {
                ImportError::Convert(format, e)
            }
        })?;
        if let Err(e) = tokio::fs::remove_file(&dest).await {
            tracing::warn!(path = %dest.display(), "cannot remove the scratch image: {e}");
        }
        info.virtual_size
    };
    finalize(target).await?;
    Ok(Imported {
        compression,
        format,
        virtual_size,
        transferred,
    })
}

/// Grows the partial image to the volume's size, flushes it, and renames it to `disk.img`
/// (then flushes the directory, so the rename survives a crash).
pub async fn finalize(target: &Target) -> Result<(), ImportError> {
    let partial = target.partial();
    let f = tokio::fs::OpenOptions::new()
        .write(true)
        .open(&partial)
        .await
        .map_err(|e| write_error(&partial, e))?;
    let len = f
        .metadata()
        .await
        .map_err(|e| write_error(&partial, e))?
        .len();
    if len < target.capacity {
        f.set_len(target.capacity)
            .await
            .map_err(|e| write_error(&partial, e))?;
    }
    f.sync_all().await.map_err(|e| write_error(&partial, e))?;
    drop(f);
    let disk = target.disk();
    tokio::fs::rename(&partial, &disk)
        .await
        .map_err(|e| write_error(&disk, e))?;
    let dir = tokio::fs::File::open(&target.dir)
        .await
        .map_err(|e| write_error(&target.dir, e))?;
    dir.sync_all()
        .await
        .map_err(|e| write_error(&target.dir, e))?;
    Ok(())
}

/// Creates an empty (sparse) `disk.img` of the volume's size (a blank volume).
pub async fn blank(target: &Target) -> Result<(), ImportError> {
    let partial = target.partial();
    drop(create(&partial).await?);
    let r = finalize(target).await;
    if r.is_err() {
        target.clean();
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn target(dir: &Path, capacity: u64) -> Target {
        Target {
            dir: dir.to_path_buf(),
            capacity,
        }
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn raw_and_gzip_land_grown_to_the_volume() {
        let dir = tempfile::tempdir().unwrap();
        let t = target(dir.path(), 4 << 20);
        let data = pattern(1 << 20);
        let p = Arc::new(Progress::default());
        let got = import(std::io::Cursor::new(data.clone()), &t, None, p.clone())
            .await
            .unwrap();
        assert_eq!(got.format, Format::Raw);
        assert_eq!(p.done(), 1 << 20);
        let disk = std::fs::read(t.disk()).unwrap();
        assert_eq!(disk.len(), 4 << 20);
        assert_eq!(&disk[..1 << 20], &data[..]);
        assert!(disk[1 << 20..].iter().all(|&b| b == 0));

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let sum: Checksum = format!("sha256:{}", {
            let mut h = Hasher::new(super::super::checksum::Algorithm::Sha256);
            h.update(&gz);
            h.finish_hex()
        })
        .parse()
        .unwrap();
        std::fs::remove_file(t.disk()).unwrap();
        let got = import(
            std::io::Cursor::new(gz.clone()),
            &t,
            Some(&sum),
            Arc::new(Progress::default()),
        )
        .await
        .unwrap();
        assert_eq!(got.compression, Some(Compression::Gzip));
        assert_eq!(&std::fs::read(t.disk()).unwrap()[..1 << 20], &data[..]);

        // A wrong checksum: nothing is left behind, the old disk.img is untouched.
        let bad: Checksum = format!("sha256:{}", "0".repeat(64)).parse().unwrap();
        let err = import(
            std::io::Cursor::new(gz),
            &target(dir.path(), 4 << 20),
            Some(&bad),
            Arc::new(Progress::default()),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ImportError::Checksum { .. }), "{err}");
        assert!(!t.partial().exists());
    }

    #[tokio::test]
    async fn an_image_naming_a_host_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        // A qcow2 whose backing file is a file of this host: converting it would copy the
        // host's file into the volume.
        let secret = dir.path().join("host-secret.raw");
        std::fs::write(&secret, pattern(1 << 20)).unwrap();
        let top = dir.path().join("top.qcow2");
        let st = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(&secret)
            .arg(&top)
            .status()
            .unwrap();
        assert!(st.success());
        let vol = dir.path().join("vol");
        std::fs::create_dir(&vol).unwrap();
        let err = import(
            std::io::Cursor::new(std::fs::read(&top).unwrap()),
            &target(&vol, 4 << 20),
            None,
            Arc::new(Progress::default()),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&err, ImportError::ExternalFile(f) if Path::new(f) == secret),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(&vol).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn too_large_text_and_ragged_sources_fail() {
        let dir = tempfile::tempdir().unwrap();
        let t = target(dir.path(), 1 << 20);
        let err = import(
            std::io::Cursor::new(pattern(2 << 20)),
            &t,
            None,
            Arc::new(Progress::default()),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ImportError::TooLarge { .. }), "{err}");
        let err = import(
            std::io::Cursor::new(b"<html>404</html>".to_vec()),
            &t,
            None,
            Arc::new(Progress::default()),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("starts with text"), "{err}");
        let err = import(
            std::io::Cursor::new(pattern(1000)),
            &t,
            None,
            Arc::new(Progress::default()),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("512-byte sectors"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
