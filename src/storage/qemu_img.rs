//! `qemu-img` (from qemu-utils) as the importer uses it: `info` for an image's format and
//! virtual size, `check` for a damaged qcow2, `convert` to raw. The images come from
//! outside, so each call names the format explicitly (`-f`) and never probes.

use super::format::Format;
use std::path::Path;
use tokio::process::Command;

/// Errors of `qemu-img` calls.
#[derive(Debug, thiserror::Error)]
pub enum QemuImgError {
    #[error("Cannot run qemu-img (is qemu-utils installed?)")]
    Spawn(#[source] std::io::Error),
    /// `qemu-img` failed; its own words.
    #[error("qemu-img {0} failed: {1}")]
    Failed(&'static str, String),
    #[error("qemu-img info printed unexpected output")]
    Output(#[source] serde_json::Error),
}

impl QemuImgError {
    /// Whether the failure was the destination filesystem filling up.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Self::Failed(_, m) if m.contains("No space left on device"))
    }
}

/// What `qemu-img info` says about an image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ImageInfo {
    pub format: String,
    #[serde(rename = "virtual-size")]
    pub virtual_size: u64,
    /// The backing file a copy-on-write image names, if any.
    #[serde(rename = "backing-filename")]
    pub backing_filename: Option<String>,
    #[serde(rename = "format-specific")]
    pub format_specific: Option<FormatSpecific>,
}

/// The format-specific part of `qemu-img info`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct FormatSpecific {
    pub data: Option<FormatSpecificData>,
}

/// The format-specific fields the importer looks at.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct FormatSpecificData {
    /// A qcow2 image's external data file, if it keeps its data in another file.
    #[serde(rename = "data-file")]
    pub data_file: Option<String>,
}

impl ImageInfo {
    /// Another file the image would read when converted: its backing file or its external
    /// data file. An imported image must not name one: `qemu-img` would read that path on
    /// this host into the volume.
    pub fn external_file(&self) -> Option<&str> {
        self.backing_filename.as_deref().or_else(|| {
            self.format_specific
                .as_ref()?
                .data
                .as_ref()?
                .data_file
                .as_deref()
        })
    }
}

async fn run(verb: &'static str, args: &[&std::ffi::OsStr]) -> Result<Vec<u8>, QemuImgError> {
    let out = Command::new("qemu-img")
        .arg(verb)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(QemuImgError::Spawn)?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let mut msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if msg.is_empty() {
        msg = String::from_utf8_lossy(&out.stdout).trim().to_string();
    }
    Err(QemuImgError::Failed(verb, msg))
}

/// `qemu-img info` of `path` read as `format` (which does not open its backing file).
pub async fn info(path: &Path, format: Format) -> Result<ImageInfo, QemuImgError> {
    let out = run(
        "info",
        &[
            "--output=json".as_ref(),
            "-f".as_ref(),
            format.qemu_name().as_ref(),
            path.as_os_str(),
        ],
    )
    .await?;
    serde_json::from_slice(&out).map_err(QemuImgError::Output)
}

/// `qemu-img check` of a qcow2, VHDX or VDI image (formats with metadata to check);
/// other formats pass as they are.
pub async fn check(path: &Path, format: Format) -> Result<(), QemuImgError> {
    if !matches!(format, Format::Qcow2 | Format::Vhdx | Format::Vdi) {
        return Ok(());
    }
    run(
        "check",
        &["-f".as_ref(), format.qemu_name().as_ref(), path.as_os_str()],
    )
    .await
    .map(drop)
}

/// Converts `src` (in `format`) to a sparse raw image at `dst`.
pub async fn convert_to_raw(src: &Path, format: Format, dst: &Path) -> Result<(), QemuImgError> {
    run(
        "convert",
        &[
            "-f".as_ref(),
            format.qemu_name().as_ref(),
            "-O".as_ref(),
            "raw".as_ref(),
            // Zero runs of 4 KiB stay holes in the output.
            "-S".as_ref(),
            "4k".as_ref(),
            src.as_os_str(),
            dst.as_os_str(),
        ],
    )
    .await
    .map(drop)
}

/// Creates an image of `format` and `size` bytes (tests and benchmarks make their sources
/// with it).
pub async fn create(path: &Path, format: Format, size: u64) -> Result<(), QemuImgError> {
    let size = size.to_string();
    run(
        "create",
        &[
            "-q".as_ref(),
            "-f".as_ref(),
            format.qemu_name().as_ref(),
            path.as_os_str(),
            size.as_ref(),
        ],
    )
    .await
    .map(drop)
}
