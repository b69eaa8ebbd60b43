//! The virtio devices of a VM as `monovirt run` and the node agent describe them:
//! `--disk PATH[,ro][,serial=S][,cache=none|writethrough|writeback]`, `--net tap=NAME[,mac=M]`, `--vsock cid=N,socket=PATH`,
//! `--virtio-console file:PATH`.

use std::path::PathBuf;
use std::str::FromStr;

use devices::virtio::block::CacheMode;

/// A virtio-blk disk over a raw image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskConfig {
    /// Raw image file or host block device.
    pub path: PathBuf,
    /// Refuse guest writes.
    pub read_only: bool,
    /// Serial the guest reads (KubeVirt's disk `serial`), at most 20 bytes.
    pub serial: Option<String>,
    /// Host page-cache mode (KubeVirt's disk `cache`); `None`: KubeVirt's default, `none`
    /// where the file system supports O_DIRECT, else `writethrough`.
    pub cache: Option<CacheMode>,
}

impl FromStr for DiskConfig {
    type Err = String;

    /// `PATH[,ro][,serial=S][,cache=MODE]`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split(',');
        let path = parts
            .next()
            .filter(|p| !p.is_empty())
            .ok_or("missing disk path")?;
        let mut disk = DiskConfig {
            path: PathBuf::from(path),
            read_only: false,
            serial: None,
            cache: None,
        };
        for opt in parts {
            match opt.split_once('=') {
                None if opt == "ro" => disk.read_only = true,
                Some(("serial", v)) if !v.is_empty() && v.len() <= 20 => {
                    disk.serial = Some(v.to_string())
                }
                Some(("cache", v)) => disk.cache = Some(v.parse().map_err(|e| format!("{e}"))?),
                _ => {
                    return Err(format!(
                        "unknown disk option {opt:?} (ro, serial=S up to 20 bytes, \
                         cache=none|writethrough|writeback)"
                    ))
                }
            }
        }
        Ok(disk)
    }
}

/// A virtio-net NIC on a tap interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NicConfig {
    /// Tap interface name (created if it does not exist), or the path of a macvtap's
    /// character device (`/dev/tapN`).
    pub tap: String,
    /// MAC address; a random locally administered one if not given.
    pub mac: Option<[u8; 6]>,
}

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        let p = parts.next().ok_or_else(|| format!("bad MAC {s:?}"))?;
        *byte = u8::from_str_radix(p, 16).map_err(|_| format!("bad MAC {s:?}"))?;
    }
    if parts.next().is_some() {
        return Err(format!("bad MAC {s:?}"));
    }
    Ok(mac)
}

impl FromStr for NicConfig {
    type Err = String;

    /// `tap=NAME[,mac=M]`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut tap = None;
        let mut mac = None;
        for opt in s.split(',') {
            match opt.split_once('=') {
                Some(("tap", v)) if !v.is_empty() => tap = Some(v.to_string()),
                Some(("mac", v)) => mac = Some(parse_mac(v)?),
                _ => return Err(format!("unknown net option {opt:?} (tap=NAME, mac=M)")),
            }
        }
        Ok(NicConfig {
            tap: tap.ok_or("missing tap=NAME")?,
            mac,
        })
    }
}

/// The vsock device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VsockConfig {
    /// Guest CID (3 or more).
    pub cid: u64,
    /// Host-side Unix socket of the VM.
    pub socket: PathBuf,
}

impl FromStr for VsockConfig {
    type Err = String;

    /// `cid=N,socket=PATH`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut cid = None;
        let mut socket = None;
        for opt in s.split(',') {
            match opt.split_once('=') {
                Some(("cid", v)) => cid = Some(v.parse().map_err(|_| format!("bad cid {v:?}"))?),
                Some(("socket", v)) if !v.is_empty() => socket = Some(PathBuf::from(v)),
                _ => return Err(format!("unknown vsock option {opt:?} (cid=N, socket=PATH)")),
            }
        }
        Ok(VsockConfig {
            cid: cid.ok_or("missing cid=N")?,
            socket: socket.ok_or("missing socket=PATH")?,
        })
    }
}

/// Where the virtio console (the guest's `hvc0`) goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VirtioConsoleConfig {
    /// Guest output appended to a file; no input.
    File(PathBuf),
}

impl FromStr for VirtioConsoleConfig {
    type Err = String;

    /// `file:PATH`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.strip_prefix("file:") {
            Some(path) if !path.is_empty() => Ok(VirtioConsoleConfig::File(PathBuf::from(path))),
            _ => Err(format!("invalid virtio console {s:?} (expected file:PATH)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks() {
        let d: DiskConfig = "/var/disk.img,ro,serial=D23YZ9W6WA5DJ487"
            .parse()
            .expect("valid");
        assert_eq!(d.path, PathBuf::from("/var/disk.img"));
        assert!(d.read_only);
        assert_eq!(d.serial.as_deref(), Some("D23YZ9W6WA5DJ487"));
        assert_eq!(d.cache, None);
        let d: DiskConfig = "/d,cache=writeback".parse().expect("valid");
        assert_eq!(d.cache, Some(CacheMode::Writeback));
        assert!(!d.read_only);
        assert_eq!(
            "/d,ro,cache=none"
                .parse::<DiskConfig>()
                .expect("valid")
                .cache,
            Some(CacheMode::None)
        );
        assert!("/d,cache=unsafe".parse::<DiskConfig>().is_err());
        assert!("/d,cache=".parse::<DiskConfig>().is_err());
        assert!("".parse::<DiskConfig>().is_err());
        assert!("/d,rw".parse::<DiskConfig>().is_err());
        assert!("/d,serial=123456789012345678901"
            .parse::<DiskConfig>()
            .is_err());
    }

    #[test]
    fn nics() {
        let n: NicConfig = "tap=tap0,mac=52:54:00:12:34:56".parse().expect("valid");
        assert_eq!(n.tap, "tap0");
        assert_eq!(n.mac, Some([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
        assert!("mac=52:54:00:12:34:56".parse::<NicConfig>().is_err());
        assert!("tap=t,mac=52:54:00:12:34".parse::<NicConfig>().is_err());
        assert!("tap=t,mac=52:54:00:12:34:56:78"
            .parse::<NicConfig>()
            .is_err());
    }

    #[test]
    fn virtio_console() {
        let c: VirtioConsoleConfig = "file:/tmp/hvc0.log".parse().expect("valid");
        assert_eq!(c, VirtioConsoleConfig::File(PathBuf::from("/tmp/hvc0.log")));
        assert!("stdio".parse::<VirtioConsoleConfig>().is_err());
    }

    #[test]
    fn vsock() {
        let v: VsockConfig = "cid=3,socket=/run/vm.vsock".parse().expect("valid");
        assert_eq!(v.cid, 3);
        assert!("cid=x,socket=/a".parse::<VsockConfig>().is_err());
        assert!("cid=3".parse::<VsockConfig>().is_err());
    }
}
