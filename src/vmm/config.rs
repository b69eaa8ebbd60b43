//! What a VM is made of: kernel, initrd, command line, vCPUs and topology, memory, CPU
//! model, console, boot protocol.

use std::path::PathBuf;
use std::time::Duration;

use arch::boot::BootProtocol;
use arch::cpu::{CpuTemplate, Topology};

use super::console::ConsoleConfig;
use super::device_config::{DiskConfig, NicConfig, VirtioConsoleConfig, VsockConfig};

/// Configuration of one VM.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// Name (thread names, memfd name, logs).
    pub name: String,
    /// Kernel image: ELF vmlinux (PVH or 64-bit entry) or bzImage.
    pub kernel: PathBuf,
    /// Initramfs.
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    pub cmdline: String,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// sockets × cores × threads; must multiply to `vcpus`. Default: one socket of
    /// single-threaded cores.
    pub topology: Option<Topology>,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// Back guest RAM with 2 MiB hugepages.
    pub hugepages: bool,
    /// CPU model and feature policies.
    pub cpu: CpuTemplate,
    /// Entry protocol.
    pub boot: BootProtocol,
    /// COM1.
    pub console: ConsoleConfig,
    /// virtio-blk disks, in PCI slot order.
    pub disks: Vec<DiskConfig>,
    /// virtio-net NICs on taps.
    pub nics: Vec<NicConfig>,
    /// virtio-vsock.
    pub vsock: Option<VsockConfig>,
    /// virtio-rng.
    pub rng: bool,
    /// virtio-console (`hvc0`), a second console beside COM1.
    pub virtio_console: Option<VirtioConsoleConfig>,
}

impl VmConfig {
    /// A config with defaults for everything but the kernel.
    pub fn new(name: impl Into<String>, kernel: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            kernel: kernel.into(),
            initrd: None,
            cmdline: String::new(),
            vcpus: 1,
            topology: None,
            memory_mib: 128,
            hugepages: false,
            cpu: CpuTemplate::default(),
            boot: BootProtocol::Auto,
            console: ConsoleConfig::Null,
            disks: Vec::new(),
            nics: Vec::new(),
            vsock: None,
            rng: false,
            virtio_console: None,
        }
    }

    /// The topology in effect.
    pub fn topology(&self) -> Topology {
        self.topology.unwrap_or_else(|| Topology::flat(self.vcpus))
    }
}

/// Default grace period between the power button and a forced stop.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);
