//! A TAP interface opened with a virtio-net header (IFF_VNET_HDR), so frames carry their
//! checksum and segmentation offload metadata between the guest and the host stack.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use thiserror::Error;

/// Length of the virtio-net header exchanged with the tap (`virtio_net_hdr_v1`).
pub const VNET_HDR_LEN: usize = 12;

/// Offload: the receiver accepts partial checksums.
pub const TUN_F_CSUM: u32 = 0x01;
/// Offload: the receiver accepts TCPv4 segmentation offload.
pub const TUN_F_TSO4: u32 = 0x02;
/// Offload: the receiver accepts TCPv6 segmentation offload.
pub const TUN_F_TSO6: u32 = 0x04;

const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;
const IFF_VNET_HDR: i16 = 0x4000;
const IFNAMSIZ: usize = 16;

// ioctl numbers: _IOW('T', nr, int); the direction bits differ on powerpc.
#[cfg(any(target_arch = "powerpc64", target_arch = "powerpc"))]
const IOC_WRITE_DIR: u64 = 4 << 29;
#[cfg(not(any(target_arch = "powerpc64", target_arch = "powerpc")))]
const IOC_WRITE_DIR: u64 = 1 << 30;
const fn tun_iow(nr: u64) -> u64 {
    // size_of::<c_int>() = 4.
    IOC_WRITE_DIR | 4 << 16 | (b'T' as u64) << 8 | nr
}
const TUNSETIFF: u64 = tun_iow(202);
const TUNSETOFFLOAD: u64 = tun_iow(208);
const TUNSETVNETHDRSZ: u64 = tun_iow(216);

/// `struct ifreq` with the flags member of its union, padded to the kernel's size.
#[repr(C)]
struct IfReq {
    name: [u8; IFNAMSIZ],
    flags: i16,
    _pad: [u8; 22],
}

/// Errors setting up a tap.
#[derive(Debug, Error)]
pub enum TapError {
    /// The interface name does not fit IFNAMSIZ or contains a NUL.
    #[error("Invalid tap name {0:?}")]
    InvalidName(String),
    /// /dev/net/tun (or the macvtap device) could not be opened.
    #[error("Failed to open /dev/net/tun")]
    OpenTun(#[source] io::Error),
    /// An ioctl on the tap failed.
    #[error("Tap ioctl {0} failed")]
    Ioctl(&'static str, #[source] io::Error),
}

/// An open tap interface, non-blocking.
#[derive(Debug)]
pub struct Tap {
    fd: OwnedFd,
    name: String,
}

impl Tap {
    /// Attaches to (or creates) the tap interface `name` with a 12-byte virtio-net
    /// header. A name ending in `%d` lets the kernel pick the number.
    pub fn open(name: &str) -> Result<Self, TapError> {
        if name.is_empty() || name.len() >= IFNAMSIZ || name.contains('\0') {
            return Err(TapError::InvalidName(name.to_string()));
        }
        Self::attach(Path::new("/dev/net/tun"), name)
    }

    /// Attaches to a macvtap through its character device (`/dev/tapN`) with the same
    /// flags and header as [`Tap::open`]; macvtap ignores the name in the request.
    pub fn open_macvtap(path: &Path) -> Result<Self, TapError> {
        Self::attach(path, "")
    }

    fn attach(device: &Path, name: &str) -> Result<Self, TapError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(device)
            .map_err(TapError::OpenTun)?;
        let fd = OwnedFd::from(file);
        let mut req = IfReq {
            name: [0; IFNAMSIZ],
            flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `req` is (repr(C),
        // the kernel's size); the fd is a tun or macvtap device we own.
        let ret = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) };
        if ret < 0 {
            return Err(TapError::Ioctl("TUNSETIFF", io::Error::last_os_error()));
        }
        let hdr_len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which is valid.
        let ret = unsafe {
            libc::ioctl(
                fd.as_raw_fd(),
                TUNSETVNETHDRSZ as _,
                &hdr_len as *const libc::c_int,
            )
        };
        if ret < 0 {
            return Err(TapError::Ioctl(
                "TUNSETVNETHDRSZ",
                io::Error::last_os_error(),
            ));
        }
        // The kernel wrote back the (possibly numbered) name, NUL-terminated; macvtap
        // leaves it as it was, so the device path names it.
        let end = req.name.iter().position(|b| *b == 0).unwrap_or(IFNAMSIZ);
        let name = if end == 0 {
            device.display().to_string()
        } else {
            String::from_utf8_lossy(&req.name[..end]).into_owned()
        };
        Ok(Tap { fd, name })
    }

    /// The interface name (as the kernel assigned it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Tells the kernel which offloads the reader (the guest) accepts (`TUN_F_*`).
    pub fn set_offload(&self, flags: u32) -> Result<(), TapError> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value; the fd is our tap.
        let ret = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                TUNSETOFFLOAD as _,
                libc::c_ulong::from(flags),
            )
        };
        if ret < 0 {
            return Err(TapError::Ioctl("TUNSETOFFLOAD", io::Error::last_os_error()));
        }
        Ok(())
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_headers() {
        #[cfg(not(any(target_arch = "powerpc64", target_arch = "powerpc")))]
        {
            assert_eq!(TUNSETIFF, 0x4004_54ca);
            assert_eq!(TUNSETOFFLOAD, 0x4004_54d0);
            assert_eq!(TUNSETVNETHDRSZ, 0x4004_54d8);
        }
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }

    #[test]
    fn names_are_checked() {
        assert!(matches!(Tap::open(""), Err(TapError::InvalidName(_))));
        assert!(matches!(
            Tap::open("a-name-that-is-too-long"),
            Err(TapError::InvalidName(_))
        ));
    }
}
