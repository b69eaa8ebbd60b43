//! Host page-cache modes of a disk image, as KubeVirt's disk `cache` field names them.
//!
//! | mode | image opened with | a guest write is done when | flush |
//! | --- | --- | --- | --- |
//! | `none` | `O_DIRECT` | it reached the host disk (its volatile cache) | `fdatasync` |
//! | `writethrough` | `O_DSYNC` | it is durable | `fdatasync` (a no-op in effect) |
//! | `writeback` | neither | it is in the host page cache | `fdatasync` |
//!
//! `none` is KubeVirt's default where the image's file system supports `O_DIRECT`, else
//! `writethrough` ([`DiskFile::open`](super::DiskFile::open) with no mode picks so).
//! Opening an image `none` and writable drops what the host page cache holds of it: such
//! pages are never read through this device, and a non-blocking `O_DIRECT` write over them
//! cannot go ahead (see `disk.rs`).
//! With the page cache (`writethrough`, `writeback`) the device serves requests whose data
//! is cached straight from its thread (`RWF_NOWAIT`); with `none` every request goes to the
//! I/O workers, since a direct read or write always waits for the disk.

use std::fmt;
use std::str::FromStr;

/// How the host caches a disk image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CacheMode {
    /// Bypass the host page cache (`O_DIRECT`).
    None,
    /// Page cache for reads; every write is durable before it completes (`O_DSYNC`).
    Writethrough,
    /// Page cache for reads and writes; durability on the guest's flush.
    Writeback,
}

impl CacheMode {
    /// The name KubeVirt's API and `--disk …,cache=` use.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheMode::None => "none",
            CacheMode::Writethrough => "writethrough",
            CacheMode::Writeback => "writeback",
        }
    }

    /// Whether reads (and writeback writes) go through the host page cache.
    pub fn uses_page_cache(self) -> bool {
        self != CacheMode::None
    }
}

impl fmt::Display for CacheMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A cache mode name that is none of `none`, `writethrough`, `writeback`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("Unknown cache mode {0:?} (none, writethrough, writeback)")]
pub struct CacheModeError(pub String);

impl FromStr for CacheMode {
    type Err = CacheModeError;

    /// ```
    /// use devices::virtio::block::CacheMode;
    /// assert_eq!("none".parse(), Ok(CacheMode::None));
    /// assert!("unsafe".parse::<CacheMode>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, CacheModeError> {
        match s {
            "none" => Ok(CacheMode::None),
            "writethrough" => Ok(CacheMode::Writethrough),
            "writeback" => Ok(CacheMode::Writeback),
            other => Err(CacheModeError(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for mode in [
            CacheMode::None,
            CacheMode::Writethrough,
            CacheMode::Writeback,
        ] {
            assert_eq!(mode.to_string().parse(), Ok(mode));
        }
        assert_eq!(
            "None".parse::<CacheMode>(),
            Err(CacheModeError("None".into()))
        );
        assert!(!CacheMode::None.uses_page_cache());
        assert!(CacheMode::Writeback.uses_page_cache());
    }
}
