//! Devices of a VirtualMachineInstance (`spec.domain.devices`): disks (disk, cdrom, lun),
//! network interfaces (masquerade, bridge, sriov, ...) and inputs; the rest is stored as given.

use crate::unstructured::Unstructured;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

/// The devices of the virtual machine.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Devices {
    /// Use virtio-transitional devices (for old guests).
    pub use_virtio_transitional: Option<bool>,
    /// Disable hotplug of volumes and interfaces.
    pub disable_hotplug: Option<bool>,
    /// Disks, CD-ROMs and LUNs; each names a volume in `spec.volumes`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<Disk>,
    /// A watchdog device. Stored as given.
    pub watchdog: Option<Unstructured>,
    /// Network interfaces; each names a network in `spec.networks`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    /// Input devices (tablet, keyboard).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<Input>,
    /// Whether to attach a pod network interface when none is given. Defaults to true.
    pub autoattach_pod_interface: Option<bool>,
    /// Whether to attach a graphics device. Defaults to true.
    pub autoattach_graphics_device: Option<bool>,
    /// Whether to attach a serial console. Defaults to true.
    pub autoattach_serial_console: Option<bool>,
    /// Whether to log the serial console output.
    pub log_serial_console: Option<bool>,
    /// Whether to attach a memory balloon device. Defaults to true.
    pub autoattach_mem_balloon: Option<bool>,
    /// Whether to attach an input device.
    pub autoattach_input_device: Option<bool>,
    /// Whether to attach a vsock device.
    #[serde(rename = "autoattachVSOCK")]
    pub autoattach_vsock: Option<bool>,
    /// A virtio-rng device giving the guest host entropy.
    pub rng: Option<Unstructured>,
    /// Give each virtio-blk device one queue per vCPU.
    pub block_multi_queue: Option<bool>,
    /// Give each virtio-net interface one queue pair per vCPU.
    pub network_interface_multiqueue: Option<bool>,
    /// GPUs to pass through. Stored as given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<Unstructured>,
    /// A virtio-serial port exposing host metrics. Stored as given.
    pub downward_metrics: Option<Unstructured>,
    /// Panic notifier devices. Stored as given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub panic_devices: Vec<Unstructured>,
    /// virtiofs filesystems; each names a volume. Stored as given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filesystems: Vec<Unstructured>,
    /// Host devices to pass through. Stored as given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub host_devices: Vec<Unstructured>,
    /// USB redirection from the client. Stored as given.
    pub client_passthrough: Option<Unstructured>,
    /// A sound device. Stored as given.
    pub sound: Option<Unstructured>,
    /// A TPM device. Stored as given.
    pub tpm: Option<Unstructured>,
    /// The video device. Stored as given.
    pub video: Option<Unstructured>,
}

/// A disk, CD-ROM or LUN (`spec.domain.devices.disks[]`), backed by the volume of the same name.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Disk {
    /// The name of the disk; must match the name of a volume.
    pub name: String,
    /// Attach the volume as a disk. The default when none of disk, cdrom and lun is given.
    pub disk: Option<DiskTarget>,
    /// Attach the volume as a LUN.
    pub lun: Option<LunTarget>,
    /// Attach the volume as a CD-ROM.
    pub cdrom: Option<CdromTarget>,
    /// Boot order, 1 first. Devices without one are not booted from.
    pub boot_order: Option<u32>,
    /// The disk's serial number (up to 36 characters of `[A-Za-z0-9_.+-]`).
    pub serial: Option<String>,
    /// Give this disk its own IO thread.
    #[serde(rename = "dedicatedIOThread")]
    pub dedicated_io_thread: Option<bool>,
    /// Host page cache mode: `none`, `writethrough` or `writeback`.
    pub cache: Option<String>,
    /// IO mode: `native` or `threads`.
    pub io: Option<String>,
    /// A tag the guest can find the disk by (device role tagging).
    pub tag: Option<String>,
    /// Logical and physical block size. Stored as given.
    pub block_size: Option<Unstructured>,
    /// Whether the disk may be shared between VMIs.
    pub shareable: Option<bool>,
    /// What to do on an IO error: `stop`, `ignore`, `report` or `enospace`.
    pub error_policy: Option<String>,
}

impl Disk {
    /// The bus of whichever of disk, cdrom and lun is set.
    pub fn bus(&self) -> Option<&str> {
        self.disk
            .as_ref()
            .and_then(|d| d.bus.as_deref())
            .or_else(|| self.cdrom.as_ref().and_then(|d| d.bus.as_deref()))
            .or_else(|| self.lun.as_ref().and_then(|d| d.bus.as_deref()))
    }
}

/// Disk target options.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct DiskTarget {
    /// The bus: `virtio`, `sata`, `scsi` or `usb`.
    pub bus: Option<String>,
    /// Expose the disk read-only.
    pub readonly: Option<bool>,
    /// The guest PCI address, e.g. `0000:81:01.10`.
    pub pci_address: Option<String>,
}

/// LUN target options.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct LunTarget {
    /// The bus: `virtio`, `sata`, `scsi` or `usb`.
    pub bus: Option<String>,
    /// Expose the LUN read-only.
    pub readonly: Option<bool>,
    /// Allow SCSI persistent reservations.
    pub reservation: Option<bool>,
}

/// CD-ROM target options.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct CdromTarget {
    /// The bus: `sata`, `scsi` or `usb` (not `virtio`).
    pub bus: Option<String>,
    /// Expose the CD-ROM read-only. Defaults to true.
    pub readonly: Option<bool>,
    /// The tray state, `closed` (the default) or `open`.
    pub tray: Option<String>,
}

/// A network interface (`spec.domain.devices.interfaces[]`), connected to the network of the
/// same name. Exactly one binding (masquerade, bridge, sriov, ...) is set.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Interface {
    /// The interface name; must match the name of a network.
    pub name: String,
    /// The emulated NIC model: `virtio` (the default), `e1000`, `e1000e`, `rtl8139`, ...
    pub model: Option<String>,
    /// Bridge the interface to the network.
    pub bridge: Option<Unstructured>,
    /// User-mode networking (deprecated in KubeVirt).
    pub slirp: Option<Unstructured>,
    /// NAT the guest behind the pod address (only with the pod network).
    pub masquerade: Option<Unstructured>,
    /// Pass through an SR-IOV virtual function (only with a multus network).
    pub sriov: Option<Unstructured>,
    /// passt user-space networking.
    pub passt: Option<Unstructured>,
    /// macvtap (deprecated in KubeVirt).
    pub macvtap: Option<Unstructured>,
    /// A network binding plugin, by name.
    pub binding: Option<PluginBinding>,
    /// Ports to forward into the guest (masquerade). All ports when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    /// The guest MAC address, e.g. `de:ad:00:00:be:af`.
    pub mac_address: Option<String>,
    /// Boot order, 1 first.
    pub boot_order: Option<u32>,
    /// The guest PCI address.
    pub pci_address: Option<String>,
    /// Extra DHCP options. Stored as given.
    pub dhcp_options: Option<Unstructured>,
    /// A tag the guest can find the interface by.
    pub tag: Option<String>,
    /// The ACPI index of the interface.
    pub acpi_index: Option<u32>,
    /// The desired link state: `up` (the default), `down` or `absent`.
    pub state: Option<String>,
}

impl Interface {
    /// The names of the bindings set on this interface (normally exactly one).
    pub fn bindings(&self) -> Vec<&'static str> {
        let mut b = Vec::new();
        let pairs: [(&'static str, bool); 7] = [
            ("bridge", self.bridge.is_some()),
            ("slirp", self.slirp.is_some()),
            ("masquerade", self.masquerade.is_some()),
            ("sriov", self.sriov.is_some()),
            ("passt", self.passt.is_some()),
            ("macvtap", self.macvtap.is_some()),
            ("binding", self.binding.is_some()),
        ];
        for (name, set) in pairs {
            if set {
                b.push(name);
            }
        }
        b
    }
}

/// A network binding plugin reference.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct PluginBinding {
    /// The name of the binding plugin registered in the cluster configuration.
    pub name: String,
}

/// A port forwarded into the guest.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Port {
    /// An optional name for the port.
    pub name: Option<String>,
    /// `TCP` (the default) or `UDP`.
    pub protocol: Option<String>,
    /// The port number, 1 to 65535.
    pub port: i32,
}

/// An input device (`spec.domain.devices.inputs[]`).
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Input {
    /// `usb` (the default) or `virtio`.
    pub bus: Option<String>,
    /// `tablet` (the default) or `keyboard`.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    /// The name of the device.
    pub name: String,
}
