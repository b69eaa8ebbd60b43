//! The image store on disk: `<data-dir>/images/<id>/` per image, `id` the first 32 hex
//! digits of the sha256 of its canonical reference, holding `image.json` (what was
//! imported, from where, when) and `rootfs/` (the unpacked file tree). An import builds
//! the new tree beside the old one and swaps it in with renames, so a reader never sees
//! a half-written image.

use super::layer::{self, LayerError};
use super::layout::{self, LayoutError};
use super::reference::{Reference, ReferenceError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{self, Read, Seek};
use std::path::{Component, Path, PathBuf};

/// KubeVirt's container-disk directory inside an image.
pub const DISK_DIR: &str = "disk";
const META: &str = "image.json";
const ROOTFS: &str = "rootfs";

/// Errors of the image store.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("Image {0} is not in the node's image store (import it with `monovirt image import`)")]
    NotFound(String),
    #[error("{0}: {1}")]
    Io(String, #[source] io::Error),
    #[error("Reading the image layout failed")]
    Layout(#[from] LayoutError),
    #[error("Unpacking the archive failed")]
    Archive(#[from] LayerError),
    #[error("Path {path:?} in image {image}: {reason}")]
    Path {
        image: String,
        path: String,
        reason: String,
    },
    #[error("Image {image} has {reason} under /{DISK_DIR}/; name one with containerDisk.path")]
    Disk { image: String, reason: String },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> ImageError {
    let what = what.into();
    move |e| ImageError::Io(what, e)
}

/// What the store records about an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Imported {
    /// The canonical reference.
    pub reference: String,
    /// What PATH was: `oci`, `docker`, `archive`, `directory` or `file`.
    pub source_kind: String,
    /// The PATH imported from.
    pub source: String,
    /// The manifest digest, for OCI layouts.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    /// RFC 3339 time of the import.
    pub imported_at: String,
}

/// One image in the store.
#[derive(Debug, Clone)]
pub struct Image {
    /// What was imported.
    pub meta: Imported,
    /// The unpacked tree.
    pub rootfs: PathBuf,
}

impl Image {
    /// The regular file at absolute `path` inside the image, resolved without leaving it
    /// (symlinks inside the image are followed only while they stay inside).
    pub fn file(&self, path: &str) -> Result<PathBuf, ImageError> {
        let err = |reason: &str| ImageError::Path {
            image: self.meta.reference.clone(),
            path: path.to_string(),
            reason: reason.to_string(),
        };
        let rel = Path::new(path.trim_start_matches('/'));
        if rel.as_os_str().is_empty()
            || rel
                .components()
                .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(err("must be an absolute path without `..`"));
        }
        let root = self
            .rootfs
            .canonicalize()
            .map_err(io_err(self.rootfs.display().to_string()))?;
        let full = root
            .join(rel)
            .canonicalize()
            .map_err(|_| err("does not exist"))?;
        if !full.starts_with(&root) {
            return Err(err("leaves the image through a symlink"));
        }
        if !full.is_file() {
            return Err(err("is not a regular file"));
        }
        Ok(full)
    }

    /// The container disk: `path` when given, else the one file under `/disk/`.
    pub fn container_disk(&self, path: Option<&str>) -> Result<PathBuf, ImageError> {
        if let Some(p) = path.filter(|p| !p.is_empty()) {
            return self.file(p);
        }
        let dir = self.rootfs.join(DISK_DIR);
        let mut files: Vec<String> = fs::read_dir(&dir)
            .map_err(|_| ImageError::Disk {
                image: self.meta.reference.clone(),
                reason: "no directory".into(),
            })?
            .flatten()
            .filter(|e| e.path().is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        files.sort();
        match files.as_slice() {
            [one] => self.file(&format!("/{DISK_DIR}/{one}")),
            [] => Err(ImageError::Disk {
                image: self.meta.reference.clone(),
                reason: "no file".into(),
            }),
            many => Err(ImageError::Disk {
                image: self.meta.reference.clone(),
                reason: format!("several files ({})", many.join(", ")),
            }),
        }
    }
}

/// The node-local store.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

fn id_of(reference: &Reference) -> String {
    let h = Sha256::digest(reference.to_string().as_bytes());
    h.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Whether `f` is a tar archive (possibly gzip-compressed): `ustar` at offset 257.
fn is_tar(path: &Path) -> Result<bool, ImageError> {
    let shown = path.display().to_string();
    let mut f = fs::File::open(path).map_err(io_err(shown.clone()))?;
    let mut head = [0u8; 2];
    let n = f.read(&mut head).map_err(io_err(shown.clone()))?;
    f.rewind().map_err(io_err(shown.clone()))?;
    let mut r: Box<dyn Read> = if n == 2 && head == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(f))
    } else {
        Box::new(f)
    };
    let mut block = vec![0u8; 512];
    let mut got = 0;
    while got < block.len() {
        match r.read(&mut block[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            // Not gzip after all, or truncated: not an archive we can read.
            Err(_) => return Ok(false),
        }
    }
    Ok(got == 512 && &block[257..262] == b"ustar")
}

/// Copies the tree at `from` to `to` (regular files, directories, symlinks).
fn copy_tree(from: &Path, to: &Path) -> Result<(), ImageError> {
    let meta = fs::symlink_metadata(from).map_err(io_err(from.display().to_string()))?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = fs::read_link(from).map_err(io_err(from.display().to_string()))?;
        std::os::unix::fs::symlink(target, to).map_err(io_err(to.display().to_string()))?;
    } else if ft.is_dir() {
        fs::create_dir_all(to).map_err(io_err(to.display().to_string()))?;
        for e in fs::read_dir(from).map_err(io_err(from.display().to_string()))? {
            let e = e.map_err(io_err(from.display().to_string()))?;
            copy_tree(&e.path(), &to.join(e.file_name()))?;
        }
    } else if ft.is_file() {
        fs::copy(from, to).map_err(io_err(to.display().to_string()))?;
    }
    Ok(())
}

impl ImageStore {
    /// The store under `data_dir/images` (created if missing).
    pub fn open(data_dir: &Path) -> Result<Self, ImageError> {
        let root = data_dir.join("images");
        fs::create_dir_all(&root).map_err(io_err(root.display().to_string()))?;
        Ok(Self { root })
    }

    /// Where the store lives.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Imports `path` as `reference`: an OCI layout (directory or tar, gzip or not), a
    /// `docker save` archive, a plain tar (its tree), a plain directory (its tree), or a
    /// plain file (placed at `dest`, by default `/disk/<file name>`, KubeVirt's
    /// container-disk place).
    pub fn import(
        &self,
        reference: &str,
        path: &Path,
        dest: Option<&str>,
    ) -> Result<Imported, ImageError> {
        let reference = Reference::parse(reference)?;
        let shown = path.display().to_string();
        let meta = fs::metadata(path).map_err(io_err(shown.clone()))?;
        let work = self.root.join(format!(".import-{}", uuid::Uuid::new_v4()));
        let result = self.build(&reference, path, &meta, dest, &work);
        let imported = match result {
            Ok(i) => i,
            Err(e) => {
                let _ = fs::remove_dir_all(&work);
                return Err(e);
            }
        };
        let target = self.root.join(id_of(&reference));
        let old = self.root.join(format!(".old-{}", uuid::Uuid::new_v4()));
        let had_old = target.exists();
        if had_old {
            fs::rename(&target, &old).map_err(io_err(target.display().to_string()))?;
        }
        fs::rename(&work, &target).map_err(io_err(target.display().to_string()))?;
        if had_old {
            let _ = fs::remove_dir_all(&old);
        }
        Ok(imported)
    }

    fn build(
        &self,
        reference: &Reference,
        path: &Path,
        meta: &fs::Metadata,
        dest: Option<&str>,
        work: &Path,
    ) -> Result<Imported, ImageError> {
        let rootfs = work.join(ROOTFS);
        fs::create_dir_all(&rootfs).map_err(io_err(rootfs.display().to_string()))?;
        let mut digest = String::new();
        let source_kind = if meta.is_dir() {
            match layout::kind(path) {
                Some(k) => {
                    digest = layout::unpack(path, reference, &rootfs)?;
                    k
                }
                None => {
                    fs::remove_dir(&rootfs).map_err(io_err(rootfs.display().to_string()))?;
                    copy_tree(path, &rootfs)?;
                    "directory"
                }
            }
        } else if is_tar(path)? {
            let extracted = work.join("archive");
            fs::create_dir_all(&extracted).map_err(io_err(extracted.display().to_string()))?;
            let f = fs::File::open(path).map_err(io_err(path.display().to_string()))?;
            layer::unpack(f, &extracted, false)?;
            let kind = match layout::kind(&extracted) {
                Some(k) => {
                    digest = layout::unpack(&extracted, reference, &rootfs)?;
                    k
                }
                None => {
                    fs::remove_dir(&rootfs).map_err(io_err(rootfs.display().to_string()))?;
                    fs::rename(&extracted, &rootfs)
                        .map_err(io_err(rootfs.display().to_string()))?;
                    "archive"
                }
            };
            let _ = fs::remove_dir_all(&extracted);
            kind
        } else {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("disk.img");
            let default = format!("/{DISK_DIR}/{name}");
            let dest = dest.unwrap_or(&default);
            let rel = Path::new(dest.trim_start_matches('/'));
            if rel.as_os_str().is_empty()
                || rel.components().any(|c| !matches!(c, Component::Normal(_)))
            {
                return Err(ImageError::Path {
                    image: reference.to_string(),
                    path: dest.to_string(),
                    reason: "must be an absolute path without `..`".into(),
                });
            }
            let to = rootfs.join(rel);
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent).map_err(io_err(parent.display().to_string()))?;
            }
            fs::copy(path, &to).map_err(io_err(to.display().to_string()))?;
            "file"
        };
        let imported = Imported {
            reference: reference.to_string(),
            source_kind: source_kind.to_string(),
            source: path
                .canonicalize()
                .unwrap_or_else(|_| path.to_path_buf())
                .display()
                .to_string(),
            digest,
            imported_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                .to_string(),
        };
        let json = serde_json::to_vec_pretty(&imported).expect("plain strings serialize");
        fs::write(work.join(META), json).map_err(io_err(META))?;
        Ok(imported)
    }

    /// The image `reference` names.
    pub fn get(&self, reference: &str) -> Result<Image, ImageError> {
        let r = Reference::parse(reference)?;
        let dir = self.root.join(id_of(&r));
        let meta = fs::read(dir.join(META))
            .ok()
            .and_then(|d| serde_json::from_slice::<Imported>(&d).ok())
            .ok_or_else(|| ImageError::NotFound(r.to_string()))?;
        Ok(Image {
            meta,
            rootfs: dir.join(ROOTFS),
        })
    }

    /// Every image, by reference.
    pub fn list(&self) -> Result<Vec<Imported>, ImageError> {
        let mut out: Vec<Imported> = fs::read_dir(&self.root)
            .map_err(io_err(self.root.display().to_string()))?
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| fs::read(e.path().join(META)).ok())
            .filter_map(|d| serde_json::from_slice(&d).ok())
            .collect();
        out.sort_by(|a: &Imported, b| a.reference.cmp(&b.reference));
        Ok(out)
    }

    /// Removes the image `reference` names.
    pub fn remove(&self, reference: &str) -> Result<(), ImageError> {
        let r = Reference::parse(reference)?;
        let dir = self.root.join(id_of(&r));
        if !dir.join(META).exists() {
            return Err(ImageError::NotFound(r.to_string()));
        }
        let gone = self.root.join(format!(".old-{}", uuid::Uuid::new_v4()));
        fs::rename(&dir, &gone).map_err(io_err(dir.display().to_string()))?;
        fs::remove_dir_all(&gone).map_err(io_err(gone.display().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn sha(data: &[u8]) -> String {
        format!(
            "sha256:{}",
            Sha256::digest(data)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        )
    }

    fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, path, *data).unwrap();
        }
        let raw = b.into_inner().unwrap();
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&raw).unwrap();
        e.finish().unwrap()
    }

    /// Writes an OCI layout with one image of `layers` tagged `tag` into `dir`.
    fn oci_layout(dir: &Path, tag: &str, layers: &[Vec<u8>]) {
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs).unwrap();
        let put = |data: &[u8]| {
            let d = sha(data);
            fs::write(blobs.join(&d[7..]), data).unwrap();
            d
        };
        let config = br#"{"architecture":"amd64","os":"linux"}"#;
        let config_digest = put(config);
        let layer_descs: Vec<serde_json::Value> = layers
            .iter()
            .map(|l| {
                serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": put(l), "size": l.len()})
            })
            .collect();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest, "size": config.len()},
            "layers": layer_descs,
        }))
        .unwrap();
        let md = put(&manifest);
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        fs::write(
            dir.join("index.json"),
            serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md,
                 "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": tag}}]}))
            .unwrap(),
        )
        .unwrap();
    }

    #[test]
    fn imports_an_oci_layout_directory_and_tar() {
        let data = tempfile::tempdir().unwrap();
        let store = ImageStore::open(data.path()).unwrap();
        let src = tempfile::tempdir().unwrap();
        let l1 = layer_tar(&[("disk/root.img", b"disk-bytes"), ("boot/vmlinuz", b"k1")]);
        let l2 = layer_tar(&[("boot/vmlinuz", b"k2"), ("boot/initrd.img", b"i")]);
        oci_layout(src.path(), "v1", &[l1, l2]);
        let imported = store
            .import("example.com/guests/test:v1", src.path(), None)
            .unwrap();
        assert_eq!(imported.source_kind, "oci");
        assert!(imported.digest.starts_with("sha256:"));
        let image = store.get("example.com/guests/test:v1").unwrap();
        assert_eq!(
            fs::read(image.container_disk(None).unwrap()).unwrap(),
            b"disk-bytes"
        );
        assert_eq!(
            fs::read(image.file("/boot/vmlinuz").unwrap()).unwrap(),
            b"k2"
        );
        assert!(image.file("/boot/../../etc/passwd").is_err());
        assert!(image.file("/boot").is_err());

        // The same layout as a tar archive (what `oci-archive:` writes), re-imported over it.
        let archive = src.path().join("../layout.tar");
        {
            let f = fs::File::create(&archive).unwrap();
            let mut b = tar::Builder::new(f);
            b.append_dir_all(".", src.path()).unwrap();
            b.finish().unwrap();
        }
        let again = store
            .import("example.com/guests/test:v1", &archive, None)
            .unwrap();
        assert_eq!(again.source_kind, "oci");
        assert_eq!(again.digest, imported.digest);
        assert_eq!(store.list().unwrap().len(), 1);
        fs::remove_file(&archive).unwrap();

        // A corrupted blob is refused and the old image stays.
        let blobs = src.path().join("blobs/sha256");
        for e in fs::read_dir(&blobs).unwrap().flatten() {
            let d = fs::read(e.path()).unwrap();
            if d.starts_with(&[0x1f, 0x8b]) {
                let mut bad = d.clone();
                let n = bad.len();
                bad[n - 9] ^= 0xff;
                fs::write(e.path(), bad).unwrap();
            }
        }
        assert!(store
            .import("example.com/guests/test:v1", src.path(), None)
            .is_err());
        assert!(store.get("example.com/guests/test:v1").is_ok());
        let leftovers: Vec<_> = fs::read_dir(store.root())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn imports_plain_files_and_directories() {
        let data = tempfile::tempdir().unwrap();
        let store = ImageStore::open(data.path()).unwrap();
        let src = tempfile::tempdir().unwrap();
        let file = src.path().join("guest.elf");
        fs::write(&file, b"\x7fELF...").unwrap();
        store.import("guest", &file, None).unwrap();
        let image = store.get("docker.io/library/guest:latest").unwrap();
        assert_eq!(
            image.container_disk(None).unwrap(),
            image.rootfs.canonicalize().unwrap().join("disk/guest.elf")
        );
        store
            .import("kernels/guest:1", &file, Some("/boot/vmlinux"))
            .unwrap();
        let k = store.get("kernels/guest:1").unwrap();
        assert!(k.file("/boot/vmlinux").is_ok());
        assert!(matches!(
            k.container_disk(None),
            Err(ImageError::Disk { .. })
        ));
        assert!(store.import("bad", &file, Some("/../x")).is_err());

        let tree = src.path().join("tree");
        fs::create_dir_all(tree.join("disk")).unwrap();
        fs::write(tree.join("disk/a.raw"), b"a").unwrap();
        fs::write(tree.join("disk/b.raw"), b"b").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", tree.join("disk/escape")).unwrap();
        store.import("tree", &tree, None).unwrap();
        let t = store.get("tree").unwrap();
        assert!(matches!(
            t.container_disk(None),
            Err(ImageError::Disk { .. })
        ));
        assert!(t.container_disk(Some("/disk/b.raw")).is_ok());
        assert!(t.file("/disk/escape").is_err());
        assert!(matches!(store.get("nothere"), Err(ImageError::NotFound(_))));
        store.remove("tree").unwrap();
        assert!(store.get("tree").is_err());
        assert_eq!(store.list().unwrap().len(), 2);
    }
}
