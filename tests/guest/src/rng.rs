//! virtio-rng through `virtio-drivers`: two 64-byte requests must be filled, not all zero,
//! and differ.

use crate::dma::GuestHal;
use crate::kv;
use virtio_drivers::device::rng::VirtIORng;
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction, PciRoot};
use virtio_drivers::transport::pci::PciTransport;

/// Checks one virtio-rng function; prints `virtio.rng.<index>`.
pub fn check<C: ConfigurationAccess>(root: &mut PciRoot<C>, df: DeviceFunction, index: usize) {
    let result = PciTransport::new::<GuestHal, C>(root, df)
        .map_err(|_| "transport error")
        .and_then(|t| VirtIORng::<GuestHal, _>::new(t).map_err(|_| "init error"))
        .and_then(|mut rng| {
            let (mut a, mut b) = ([0u8; 64], [0u8; 64]);
            let n = rng.request_entropy(&mut a).map_err(|_| "request error")?;
            let m = rng.request_entropy(&mut b).map_err(|_| "request error")?;
            Ok(match (n, m) {
                (64, 64) if a.iter().all(|&x| x == 0) => "zeros",
                (64, 64) if a == b => "repeats",
                (64, 64) => "ok",
                _ => "short",
            })
        });
    match result {
        Ok(verdict) => kv!(core::format_args!("virtio.rng.{index}"), "{df},{verdict}"),
        Err(e) => kv!(core::format_args!("virtio.rng.{index}"), "{df},{e}"),
    }
}
