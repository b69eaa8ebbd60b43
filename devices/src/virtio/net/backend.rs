//! Where a virtio-net device's frames go: a tap interface, or any datagram socket that
//! speaks frames prefixed with the 12-byte virtio-net header (one frame per datagram,
//! like a `socketpair(AF_UNIX, SOCK_DGRAM)` to a userspace switch).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::tap::{Tap, TapError};

/// The host side of a virtio-net device. Its fd must be non-blocking.
#[derive(Debug)]
pub enum NetBackend {
    /// A tap interface with IFF_VNET_HDR.
    Tap(Tap),
    /// A datagram socket carrying header-prefixed frames.
    Datagram(OwnedFd),
}

impl NetBackend {
    /// Offloads the guest accepts on receive (`TUN_F_*`); only a tap needs telling.
    pub fn set_offload(&self, flags: u32) -> Result<(), TapError> {
        match self {
            NetBackend::Tap(tap) => tap.set_offload(flags),
            NetBackend::Datagram(_) => Ok(()),
        }
    }
}

impl AsRawFd for NetBackend {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            NetBackend::Tap(tap) => tap.as_raw_fd(),
            NetBackend::Datagram(fd) => fd.as_raw_fd(),
        }
    }
}
