//! `monovirt run`: boot one VM in the foreground, stream COM1, and exit with the guest:
//! 0 on poweroff, non-zero with the reason otherwise. Deliberately lean (no async
//! runtime, no control plane): it is the debugging entry point and the boot benchmark.

use std::path::PathBuf;

use arch::boot::BootProtocol;
use arch::cpuid::{CpuModel, CpuTemplate, FeaturePolicy};

use super::device_config::{DiskConfig, NicConfig, VirtioConsoleConfig, VsockConfig};
use super::{ConsoleConfig, ExitReason, VmConfig, VmError};

/// Arguments of `monovirt run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Kernel: ELF vmlinux (PVH or 64-bit entry) or bzImage.
    #[arg(long)]
    pub kernel: PathBuf,
    /// Initramfs.
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, default_value = "")]
    pub cmdline: String,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    pub cpus: u32,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 128)]
    pub memory: u64,
    /// COM1: stdio, null or file:PATH.
    #[arg(long, default_value = "stdio")]
    pub console: ConsoleConfig,
    /// Entry protocol: auto, pvh or linux64.
    #[arg(long, default_value = "auto")]
    pub boot: BootProtocol,
    /// Back guest memory with 2 MiB hugepages.
    #[arg(long)]
    pub hugepages: bool,
    /// CPU model: host-model or host-passthrough.
    #[arg(long, default_value = "host-model")]
    pub cpu_model: CpuModel,
    /// CPU feature policy as NAME=POLICY (force, require, optional, disable, forbid);
    /// repeatable.
    #[arg(long = "cpu-feature", value_parser = parse_feature)]
    pub cpu_features: Vec<(String, FeaturePolicy)>,
    /// virtio-blk disk as PATH[,ro][,serial=S]; repeatable.
    #[arg(long = "disk")]
    pub disks: Vec<DiskConfig>,
    /// virtio-net NIC as tap=NAME[,mac=M]; repeatable.
    #[arg(long = "net")]
    pub nics: Vec<NicConfig>,
    /// virtio-vsock as cid=N,socket=PATH.
    #[arg(long)]
    pub vsock: Option<VsockConfig>,
    /// Add a virtio-rng entropy device.
    #[arg(long)]
    pub rng: bool,
    /// virtio-console (hvc0) output as file:PATH.
    #[arg(long)]
    pub virtio_console: Option<VirtioConsoleConfig>,
}

fn parse_feature(s: &str) -> Result<(String, FeaturePolicy), String> {
    let (name, policy) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=POLICY, got {s:?}"))?;
    let policy = policy.parse().map_err(|e| format!("{e}"))?;
    Ok((name.to_string(), policy))
}

impl RunArgs {
    /// The VM configuration these arguments describe.
    pub fn config(&self) -> VmConfig {
        VmConfig {
            initrd: self.initrd.clone(),
            cmdline: self.cmdline.clone(),
            vcpus: self.cpus,
            memory_mib: self.memory,
            hugepages: self.hugepages,
            cpu: CpuTemplate {
                model: self.cpu_model.clone(),
                features: self.cpu_features.clone(),
            },
            boot: self.boot,
            console: self.console.clone(),
            disks: self.disks.clone(),
            nics: self.nics.clone(),
            vsock: self.vsock.clone(),
            rng: self.rng,
            virtio_console: self.virtio_console.clone(),
            ..VmConfig::new("run", &self.kernel)
        }
    }
}

/// Process exit code for a VM's end.
pub fn exit_code(reason: &ExitReason) -> i32 {
    match reason {
        ExitReason::Shutdown => 0,
        ExitReason::Reboot => 3,
        ExitReason::Crash { .. } => 4,
        ExitReason::Killed => 5,
    }
}

/// Boots the VM and waits for it to end.
pub fn run(args: &RunArgs) -> Result<ExitReason, VmError> {
    let handle = super::create(args.config())?;
    // A VM that ends before it starts (it cannot here) still yields a reason below.
    let _ = handle.start();
    Ok(handle.wait())
}
