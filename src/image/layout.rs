//! Reading an image from an OCI image layout directory (`oci-layout`, `index.json`,
//! `blobs/sha256/…`; what `skopeo copy … oci:DIR`, `buildah push … oci-archive:` and
//! `docker save` since Docker 25 write) or from an older `docker save` directory
//! (`manifest.json` naming `…/layer.tar` files). The manifest is chosen by its
//! `org.opencontainers.image.ref.name` annotation (tag) when several are listed, else by
//! the host's platform; nested indexes are followed. Every blob read is verified against
//! its sha256 digest.

use super::layer::{self, LayerError};
use super::reference::Reference;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// Nested indexes deeper than this are refused (a loop, or a hostile layout).
const MAX_DEPTH: usize = 4;
/// The largest index or manifest read into memory.
const MAX_JSON: u64 = 4 << 20;

/// Errors reading a layout.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("Reading {0} failed")]
    Io(String, #[source] io::Error),
    #[error("{0} is not valid JSON for its kind")]
    Json(String, #[source] serde_json::Error),
    #[error("Blob {0} does not match its digest")]
    Digest(String),
    #[error("Unsupported digest {0:?} (only sha256)")]
    Algorithm(String),
    #[error("{0}")]
    Select(String),
    #[error("Layer {0}")]
    Layer(String, #[source] LayerError),
}

/// An OCI content descriptor.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: i64,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// A descriptor's platform.
#[derive(Debug, Clone, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
}

#[derive(Debug, Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    #[serde(default)]
    media_type: String,
    #[serde(default)]
    manifests: Vec<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    #[serde(default)]
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

/// What kind of image directory `dir` is, if any.
pub fn kind(dir: &Path) -> Option<&'static str> {
    if dir.join("index.json").is_file() {
        Some("oci")
    } else if dir.join("manifest.json").is_file() {
        Some("docker")
    } else {
        None
    }
}

/// The Go architecture name of this host (what OCI platforms use).
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        other => other,
    }
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

fn blob_path(dir: &Path, digest: &str) -> Result<PathBuf, LayoutError> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| LayoutError::Algorithm(digest.to_string()))?;
    Ok(dir.join("blobs/sha256").join(hex))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a small blob whole and checks its digest.
fn read_blob(dir: &Path, digest: &str) -> Result<Vec<u8>, LayoutError> {
    let path = blob_path(dir, digest)?;
    let shown = path.display().to_string();
    let f = File::open(&path).map_err(|e| LayoutError::Io(shown.clone(), e))?;
    let mut data = Vec::new();
    f.take(MAX_JSON)
        .read_to_end(&mut data)
        .map_err(|e| LayoutError::Io(shown, e))?;
    if format!("sha256:{}", hex(&Sha256::digest(&data))) != digest.to_ascii_lowercase() {
        return Err(LayoutError::Digest(digest.to_string()));
    }
    Ok(data)
}

fn json<T: serde::de::DeserializeOwned>(what: &str, data: &[u8]) -> Result<T, LayoutError> {
    serde_json::from_slice(data).map_err(|e| LayoutError::Json(what.to_string(), e))
}

/// Picks the manifest for `reference` among `candidates`.
fn select<'a>(
    candidates: &'a [Descriptor],
    reference: &Reference,
) -> Result<&'a Descriptor, LayoutError> {
    if candidates.len() == 1 {
        return Ok(&candidates[0]);
    }
    let full = reference.to_string();
    let by_name: Vec<&Descriptor> = candidates
        .iter()
        .filter(|d| {
            d.annotations.get(CONTAINERD_NAME) == Some(&full)
                || d.annotations.get(REF_NAME) == reference.tag.as_ref()
                || d.annotations.get(REF_NAME) == Some(&full)
        })
        .collect();
    if by_name.len() == 1 {
        return Ok(by_name[0]);
    }
    let pool: Vec<&Descriptor> = if by_name.is_empty() {
        candidates.iter().collect()
    } else {
        by_name
    };
    let arch = host_architecture();
    let by_platform: Vec<&Descriptor> = pool
        .iter()
        .copied()
        .filter(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.architecture == arch && (p.os.is_empty() || p.os == "linux"))
        })
        .collect();
    match by_platform.as_slice() {
        [one] => Ok(one),
        _ => Err(LayoutError::Select(format!(
            "the layout lists {} manifests and none is tagged {:?} or for linux/{arch} alone",
            candidates.len(),
            reference.tag.as_deref().unwrap_or_default()
        ))),
    }
}

/// The layer descriptors of the image `reference` names in the OCI layout `dir`, and the
/// digest of its manifest.
pub fn oci_layers(
    dir: &Path,
    reference: &Reference,
) -> Result<(String, Vec<Descriptor>), LayoutError> {
    let index_path = dir.join("index.json");
    let data = std::fs::read(&index_path)
        .map_err(|e| LayoutError::Io(index_path.display().to_string(), e))?;
    let index: Index = json("index.json", &data)?;
    let mut candidates = index.manifests;
    for _ in 0..MAX_DEPTH {
        if candidates.is_empty() {
            return Err(LayoutError::Select("the index lists no manifests".into()));
        }
        let chosen = select(&candidates, reference)?.clone();
        let manifest: Manifest = json(&chosen.digest, &read_blob(dir, &chosen.digest)?)?;
        let is_index = chosen.media_type == MT_OCI_INDEX
            || chosen.media_type == MT_DOCKER_LIST
            || manifest.media_type == MT_OCI_INDEX
            || manifest.media_type == MT_DOCKER_LIST
            || (!manifest.manifests.is_empty() && manifest.layers.is_empty());
        if !is_index {
            return Ok((chosen.digest, manifest.layers));
        }
        candidates = manifest.manifests;
    }
    Err(LayoutError::Select("indexes nest too deeply".into()))
}

/// Unpacks the image `reference` names in the layout `dir` onto `rootfs`; returns the
/// manifest's digest (empty for a `docker save` directory, which has none).
pub fn unpack(dir: &Path, reference: &Reference, rootfs: &Path) -> Result<String, LayoutError> {
    match kind(dir) {
        Some("oci") => {
            let (digest, layers) = oci_layers(dir, reference)?;
            for l in &layers {
                let path = blob_path(dir, &l.digest)?;
                let f = File::open(&path)
                    .map_err(|e| LayoutError::Io(path.display().to_string(), e))?;
                let mut hashing = Hashing {
                    inner: f,
                    hash: Sha256::new(),
                };
                layer::unpack(&mut hashing, rootfs, true)
                    .map_err(|e| LayoutError::Layer(l.digest.clone(), e))?;
                // The tar reader stops at the end-of-archive blocks; hash the padding too.
                io::copy(&mut hashing, &mut io::sink())
                    .map_err(|e| LayoutError::Io(path.display().to_string(), e))?;
                if format!("sha256:{}", hex(&hashing.hash.finalize())) != l.digest {
                    return Err(LayoutError::Digest(l.digest.clone()));
                }
            }
            Ok(digest)
        }
        Some(_) => {
            let data = std::fs::read(dir.join("manifest.json"))
                .map_err(|e| LayoutError::Io("manifest.json".into(), e))?;
            let entries: Vec<DockerEntry> = json("manifest.json", &data)?;
            let full = reference.to_string();
            let entry = match entries.as_slice() {
                [one] => one,
                many => many
                    .iter()
                    .find(|e| {
                        e.repo_tags
                            .iter()
                            .any(|t| Reference::parse(t).is_ok_and(|r| r.to_string() == full))
                    })
                    .ok_or_else(|| {
                        LayoutError::Select(format!("manifest.json lists no image tagged {full}"))
                    })?,
            };
            for l in &entry.layers {
                let path = super::layer::inside_checked(dir, l).ok_or_else(|| {
                    LayoutError::Select(format!("layer path {l:?} leaves the archive"))
                })?;
                let f = File::open(&path)
                    .map_err(|e| LayoutError::Io(path.display().to_string(), e))?;
                layer::unpack(f, rootfs, true).map_err(|e| LayoutError::Layer(l.clone(), e))?;
            }
            Ok(String::new())
        }
        None => Err(LayoutError::Select(format!(
            "{} has neither index.json nor manifest.json",
            dir.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(digest: &str, ann: &[(&str, &str)], arch: Option<&str>) -> Descriptor {
        Descriptor {
            media_type: String::new(),
            digest: digest.into(),
            size: 0,
            annotations: ann
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            platform: arch.map(|a| Platform {
                architecture: a.into(),
                os: "linux".into(),
            }),
        }
    }

    #[test]
    fn selects_by_tag_then_platform() {
        let r = Reference::parse("x:v2").unwrap();
        let c = [
            desc("a", &[(REF_NAME, "v1")], None),
            desc("b", &[(REF_NAME, "v2")], None),
        ];
        assert_eq!(select(&c, &r).unwrap().digest, "b");
        let c = [
            desc("a", &[], Some("riscv64")),
            desc("b", &[], Some(host_architecture())),
        ];
        assert_eq!(select(&c, &r).unwrap().digest, "b");
        let c = [desc("a", &[], None), desc("b", &[], None)];
        assert!(select(&c, &r).is_err());
    }

    #[test]
    fn blob_paths_are_sha256_only() {
        assert!(blob_path(Path::new("/l"), "sha512:00").is_err());
        assert!(blob_path(Path::new("/l"), "sha256:../../etc").is_err());
        let d = format!("sha256:{}", "0".repeat(64));
        assert_eq!(
            blob_path(Path::new("/l"), &d).unwrap(),
            Path::new("/l/blobs/sha256").join("0".repeat(64))
        );
    }
}
