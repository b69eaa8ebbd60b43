//! virtio-console (hvc0) through `virtio-drivers`: the guest writes one line,
//! [`LINE`], to port 0, which the host finds on the console's backend.

use crate::dma::GuestHal;
use crate::kv;
use virtio_drivers::device::console::VirtIOConsole;
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction, PciRoot};
use virtio_drivers::transport::pci::PciTransport;

/// What the guest writes to each virtio console.
pub const LINE: &[u8] = b"monovirt-test-guest on hvc\n";

/// Checks one virtio-console function; prints `virtio.console.<index>`.
pub fn check<C: ConfigurationAccess>(root: &mut PciRoot<C>, df: DeviceFunction, index: usize) {
    let result = PciTransport::new::<GuestHal, C>(root, df)
        .map_err(|_| "transport error")
        .and_then(|t| VirtIOConsole::<GuestHal, _>::new(t).map_err(|_| "init error"))
        .and_then(|mut console| console.send_bytes(LINE).map_err(|_| "send error"));
    match result {
        Ok(()) => kv!(
            core::format_args!("virtio.console.{index}"),
            "{df},wrote {}",
            LINE.len()
        ),
        Err(e) => kv!(core::format_args!("virtio.console.{index}"), "{df},{e}"),
    }
}
