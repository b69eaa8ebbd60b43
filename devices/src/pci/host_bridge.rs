//! The host bridge at 00:00.0: a configuration space with nothing behind it, which tells
//! the guest the root complex is there.

use super::configuration::{BarMove, PciClass, PciConfiguration, PciIdentity};
use super::device::PciDevice;

/// Vendor of the host bridge (Intel), as Cloud Hypervisor and Firecracker present it.
const HOST_BRIDGE_VENDOR_ID: u16 = 0x8086;
/// Device ID of the host bridge.
const HOST_BRIDGE_DEVICE_ID: u16 = 0x0d57;

/// The host bridge function.
///
/// ```
/// use devices::pci::{HostBridge, PciDevice};
/// let mut bridge = HostBridge::new();
/// assert_eq!(bridge.read_config_register(0), 0x0d57_8086);
/// // Class code: bridge (0x06), host bridge (0x00).
/// assert_eq!(bridge.read_config_register(2) >> 16, 0x0600);
/// ```
#[derive(Debug)]
pub struct HostBridge {
    config: PciConfiguration,
}

impl HostBridge {
    /// A host bridge.
    pub fn new() -> Self {
        HostBridge {
            config: PciConfiguration::new(PciIdentity {
                vendor_id: HOST_BRIDGE_VENDOR_ID,
                device_id: HOST_BRIDGE_DEVICE_ID,
                revision: 0,
                class: PciClass::HostBridge,
                subsystem_vendor_id: 0,
                subsystem_id: 0,
            }),
        }
    }
}

impl Default for HostBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl PciDevice for HostBridge {
    fn configuration(&self) -> &PciConfiguration {
        &self.config
    }

    fn write_config_register(&mut self, index: usize, offset: usize, data: &[u8]) -> Vec<BarMove> {
        self.config.write_register(index, offset, data)
    }

    fn read_bar(&mut self, _bar: usize, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write_bar(&mut self, _bar: usize, _offset: u64, _data: &[u8]) {}
}
