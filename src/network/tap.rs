//! Persistent tap interfaces for VMI NICs. The kernel refuses to create taps over
//! rtnetlink, so they are made through /dev/net/tun with the same flags the VMM's
//! virtio-net backend opens them with (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, see
//! `devices::virtio::net::Tap`) and marked persistent (TUNSETPERSIST), so they outlive
//! this fd and the VMM attaches to them by name. [`super::link::Links`] plugs them into
//! bridges and deletes them.

use std::io;
use std::os::fd::AsRawFd;

use devices::virtio::net::Tap;
use thiserror::Error;

/// Errors creating a tap.
#[derive(Debug, Error)]
pub enum TapCreateError {
    /// /dev/net/tun refused the name or flags.
    #[error("Failed to create tap {0}")]
    Open(String, #[source] devices::virtio::net::TapError),
    /// TUNSETPERSIST failed.
    #[error("Failed to make tap {0} persistent")]
    Persist(String, #[source] io::Error),
}

#[cfg(any(target_arch = "powerpc64", target_arch = "powerpc"))]
const IOC_WRITE_DIR: u64 = 4 << 29;
#[cfg(not(any(target_arch = "powerpc64", target_arch = "powerpc")))]
const IOC_WRITE_DIR: u64 = 1 << 30;
/// `_IOW('T', 203, int)`.
const TUNSETPERSIST: u64 = IOC_WRITE_DIR | 4 << 16 | (b'T' as u64) << 8 | 203;

/// Creates the persistent tap `name` (or takes over an existing, unattached one).
pub fn create_persistent(name: &str) -> Result<(), TapCreateError> {
    let tap = Tap::open(name).map_err(|e| TapCreateError::Open(name.to_string(), e))?;
    // SAFETY: TUNSETPERSIST takes its argument by value; the fd is the tap we just
    // attached to and own for the duration of the call.
    let ret = unsafe { libc::ioctl(tap.as_raw_fd(), TUNSETPERSIST as _, 1 as libc::c_ulong) };
    if ret < 0 {
        return Err(TapCreateError::Persist(
            name.to_string(),
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_number_matches_the_kernel_header() {
        #[cfg(not(any(target_arch = "powerpc64", target_arch = "powerpc")))]
        assert_eq!(TUNSETPERSIST, 0x4004_54cb);
    }
}
