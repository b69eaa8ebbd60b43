//! Disk image and compression formats, recognised by their magic numbers (as CDI's
//! `image.HeaderFormats` does): the importer unpacks gzip and xz, copies raw and ISO images
//! as they are, and has `qemu-img` convert qcow2, VMDK, VHDX, VHD and VDI to raw.

/// How many leading bytes [`detect`] and [`detect_compression`] want to see (an ISO's
/// `CD001` sits at 0x8001).
pub const HEADER_LEN: usize = 0x8001 + 5;

/// A compression wrapped around an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Xz,
}

/// An image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A plain disk image: bytes as the guest sees them.
    Raw,
    /// An ISO 9660 image (copied as raw).
    Iso,
    Qcow2,
    Vmdk,
    Vhdx,
    /// The legacy Virtual PC format ("conectix").
    Vpc,
    Vdi,
}

impl Format {
    /// The name `qemu-img -f` knows the format by.
    pub fn qemu_name(self) -> &'static str {
        match self {
            Self::Raw | Self::Iso => "raw",
            Self::Qcow2 => "qcow2",
            Self::Vmdk => "vmdk",
            Self::Vhdx => "vhdx",
            Self::Vpc => "vpc",
            Self::Vdi => "vdi",
        }
    }

    /// Whether the image is the guest's bytes as they are (no conversion).
    pub fn is_raw(self) -> bool {
        matches!(self, Self::Raw | Self::Iso)
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Raw => "raw",
            Self::Iso => "iso",
            other => other.qemu_name(),
        })
    }
}

/// The compression of a stream starting with `head`, if any.
///
/// ```
/// use monovirt::storage::format::{detect_compression, Compression};
/// assert_eq!(detect_compression(&[0x1f, 0x8b, 8, 0]), Some(Compression::Gzip));
/// assert_eq!(detect_compression(b"QFI\xfb"), None);
/// ```
pub fn detect_compression(head: &[u8]) -> Option<Compression> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Some(Compression::Gzip)
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Some(Compression::Xz)
    } else {
        None
    }
}

/// The format of an (uncompressed) image starting with `head`, or `None` when it has no
/// known magic. `head` should hold [`HEADER_LEN`] bytes when the image is that long.
///
/// ```
/// use monovirt::storage::format::{detect, Format};
/// assert_eq!(detect(b"QFI\xfb\0\0\0\x03"), Some(Format::Qcow2));
/// assert_eq!(detect(b"KDMV"), Some(Format::Vmdk));
/// assert_eq!(detect(&[0u8; 512]), None);
/// ```
pub fn detect(head: &[u8]) -> Option<Format> {
    let at = |off: usize, magic: &[u8]| head.get(off..off + magic.len()) == Some(magic);
    if at(0, b"QFI\xfb") {
        Some(Format::Qcow2)
    } else if at(0, b"KDMV") || at(0, b"# Disk DescriptorFile") {
        Some(Format::Vmdk)
    } else if at(0, b"vhdxfile") {
        Some(Format::Vhdx)
    } else if at(0, b"conectix") {
        Some(Format::Vpc)
    } else if at(0x40, &[0x7f, 0x10, 0xda, 0xbe]) {
        Some(Format::Vdi)
    } else if at(0x8001, b"CD001") {
        Some(Format::Iso)
    } else {
        None
    }
}

/// Whether `head` (the start of an image without a known magic) reads as text, e.g. an HTML
/// error page or a README served in place of an image: no NUL bytes and only printable
/// ASCII or whitespace in its first 512 bytes. A raw disk starts with a boot sector, a
/// partition table or zeros, never like that.
///
/// ```
/// use monovirt::storage::format::looks_like_text;
/// assert!(looks_like_text(b"<!DOCTYPE html><html>Not here</html>\n"));
/// assert!(!looks_like_text(&[0u8; 512]));
/// ```
pub fn looks_like_text(head: &[u8]) -> bool {
    let probe = &head[..head.len().min(512)];
    !probe.is_empty()
        && probe
            .iter()
            .all(|&b| b == b'\n' || b == b'\r' || b == b'\t' || (0x20..0x7f).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vdi_and_iso_magics_sit_at_their_offsets() {
        let mut vdi = vec![0u8; 0x50];
        vdi[0x40..0x44].copy_from_slice(&[0x7f, 0x10, 0xda, 0xbe]);
        assert_eq!(detect(&vdi), Some(Format::Vdi));
        let mut iso = vec![0u8; HEADER_LEN];
        iso[0x8001..0x8006].copy_from_slice(b"CD001");
        assert_eq!(detect(&iso), Some(Format::Iso));
        assert!(Format::Iso.is_raw());
        assert_eq!(detect(&iso[..0x8003]), None);
        assert_eq!(detect(b"vhdxfile...."), Some(Format::Vhdx));
        assert_eq!(detect(b"conectix"), Some(Format::Vpc));
        assert_eq!(
            detect_compression(&[0xfd, b'7', b'z', b'X', b'Z', 0]),
            Some(Compression::Xz)
        );
    }

    #[test]
    fn binary_is_not_text() {
        let mut mbr = vec![0u8; 512];
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        assert!(!looks_like_text(&mbr));
        assert!(!looks_like_text(b""));
        assert!(looks_like_text(b"just some words\n"));
    }
}
