//! Unpacking one image layer (a tar stream, optionally gzip-compressed) onto a root
//! directory, applying the OCI whiteouts of the layers below it: `.wh.NAME` removes NAME,
//! `.wh..wh..opq` empties its directory. Entries are unpacked with the tar crate's
//! `unpack_in`, which refuses paths that leave the root (`..`, absolute paths, symlinked
//! parents pointing outside); device nodes are skipped (a VM image never needs them on
//! the host).

use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

/// The whiteout prefix.
const WHITEOUT: &str = ".wh.";
/// The opaque-directory marker.
const OPAQUE: &str = ".wh..wh..opq";

/// Errors unpacking a layer.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("Reading the layer failed")]
    Read(#[source] io::Error),
    #[error("Unpacking {0} failed")]
    Unpack(String, #[source] io::Error),
    #[error("Layer entry {0:?} leaves the image root")]
    Escape(String),
    #[error("Layer is compressed with {0}, which is not supported (only gzip)")]
    Compression(&'static str),
}

/// Wraps `reader` in a gzip decoder when it starts with gzip's magic bytes.
pub fn decompressed<'a, R: Read + 'a>(reader: R) -> Result<Box<dyn Read + 'a>, LayerError> {
    let mut buf = BufReader::with_capacity(1 << 16, reader);
    let head = buf.fill_buf().map_err(LayerError::Read)?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(buf)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Err(LayerError::Compression("zstd"))
    } else {
        Ok(Box::new(buf))
    }
}

/// `path` below `root`, refusing anything but normal components.
fn inside(root: &Path, path: &Path) -> Option<PathBuf> {
    let mut out = root.to_path_buf();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

/// `rel` (a relative path from an archive's metadata) below `root`, or `None` if it
/// would leave it.
pub fn inside_checked(root: &Path, rel: &str) -> Option<PathBuf> {
    inside(root, Path::new(rel))
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Unpacks the tar stream `reader` (gzip or not) onto `root`, applying whiteouts when
/// `whiteouts` is set (image layers; not for a plain archive).
pub fn unpack(reader: impl Read, root: &Path, whiteouts: bool) -> Result<(), LayerError> {
    let mut archive = tar::Archive::new(decompressed(reader)?);
    archive.set_overwrite(true);
    archive.set_preserve_mtime(true);
    let entries = archive.entries().map_err(LayerError::Read)?;
    for entry in entries {
        let mut entry = entry.map_err(LayerError::Read)?;
        let path = entry.path().map_err(LayerError::Read)?.into_owned();
        let shown = path.display().to_string();
        if matches!(
            entry.header().entry_type(),
            tar::EntryType::Block | tar::EntryType::Char | tar::EntryType::Fifo
        ) {
            tracing::debug!(entry = %shown, "skipping a device node in an image layer");
            continue;
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if whiteouts && name.starts_with(WHITEOUT) {
            let parent = path.parent().unwrap_or(Path::new(""));
            let dir = inside(root, parent).ok_or_else(|| LayerError::Escape(shown.clone()))?;
            if name == OPAQUE {
                if let Ok(children) = fs::read_dir(&dir) {
                    for child in children.flatten() {
                        remove_any(&child.path())
                            .map_err(|e| LayerError::Unpack(shown.clone(), e))?;
                    }
                }
            } else {
                let target = dir.join(&name[WHITEOUT.len()..]);
                remove_any(&target).map_err(|e| LayerError::Unpack(shown.clone(), e))?;
            }
            continue;
        }
        if inside(root, &path).is_none() {
            return Err(LayerError::Escape(shown));
        }
        // A file replacing a directory of a lower layer (or the reverse) replaces it.
        if let Some(target) = inside(root, &path) {
            let is_dir = entry.header().entry_type().is_dir();
            if let Ok(m) = fs::symlink_metadata(&target) {
                if m.is_dir() != is_dir || (!is_dir && m.file_type().is_symlink()) {
                    remove_any(&target).map_err(|e| LayerError::Unpack(shown.clone(), e))?;
                }
            }
        }
        let unpacked = entry
            .unpack_in(root)
            .map_err(|e| LayerError::Unpack(shown.clone(), e))?;
        if !unpacked {
            return Err(LayerError::Escape(shown));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            match data {
                Some(d) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(d.len() as u64);
                    h.set_mode(0o644);
                    h.set_cksum();
                    b.append_data(&mut h, path, *d).unwrap();
                }
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_mode(0o755);
                    h.set_cksum();
                    b.append_data(&mut h, path, &[][..]).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn layers_stack_with_whiteouts() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let lower = tar_of(&[
            ("disk/", None),
            ("disk/a.img", Some(b"aaaa")),
            ("etc/", None),
            ("etc/x", Some(b"x")),
            ("etc/y", Some(b"y")),
            ("old/", None),
            ("old/z", Some(b"z")),
        ]);
        unpack(&gz(&lower)[..], root, true).unwrap();
        let upper = tar_of(&[
            ("disk/.wh.a.img", Some(b"")),
            ("disk/b.img", Some(b"bb")),
            ("etc/.wh..wh..opq", Some(b"")),
            ("etc/w", Some(b"w")),
            ("old", Some(b"now a file")),
        ]);
        unpack(&upper[..], root, true).unwrap();
        assert!(!root.join("disk/a.img").exists());
        assert_eq!(fs::read(root.join("disk/b.img")).unwrap(), b"bb");
        assert!(!root.join("etc/x").exists() && !root.join("etc/y").exists());
        assert_eq!(fs::read(root.join("etc/w")).unwrap(), b"w");
        assert_eq!(fs::read(root.join("old")).unwrap(), b"now a file");
    }

    #[test]
    fn escaping_entries_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        // The tar crate's builder refuses `..` itself, so write the name into the header.
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(1);
        h.set_mode(0o644);
        h.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../escape");
        h.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&h, &b"e"[..]).unwrap();
        let data = b.into_inner().unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        assert!(matches!(
            unpack(&data[..], &root, true),
            Err(LayerError::Escape(_))
        ));
        assert!(!dir.path().join("escape").exists());
        let wh = tar_of(&[("a/", None)]);
        unpack(&wh[..], &root, true).unwrap();
        assert!(inside(&root, Path::new("../x")).is_none());
    }

    #[test]
    fn zstd_is_named() {
        let data = [0x28u8, 0xb5, 0x2f, 0xfd, 0, 0];
        assert!(matches!(
            unpack(&data[..], Path::new("/nonexistent"), true),
            Err(LayerError::Compression("zstd"))
        ));
    }
}
