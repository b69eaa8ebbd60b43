//! `monovirt run`: boot one VM in the foreground, stream COM1, and exit with the guest:
//! 0 on poweroff, non-zero with the reason otherwise. Deliberately lean (no async
//! runtime, no control plane): it is the debugging entry point and the boot benchmark.
//!
//! On a terminal, stdin is raw while the guest runs ([`super::terminal`]). SIGTERM or
//! SIGINT (Ctrl-C) presses the ACPI power button and stops the VM by force when it has
//! not powered off after `--stop-timeout`; a second signal stops it at once.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use arch::boot::BootProtocol;
use arch::cpu::{CpuModel, CpuTemplate, FeaturePolicy};

use super::device_config::{DiskConfig, NicConfig, VirtioConsoleConfig, VsockConfig};
use super::terminal::{Keys, RawMode};
use super::{ConsoleConfig, ExitReason, VmConfig, VmError, VmHandle};

/// Arguments of `monovirt run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Kernel: on x86_64 an ELF vmlinux (PVH or 64-bit entry) or bzImage; on ppc64le an
    /// ELF vmlinux; on s390x the kernel image (arch/s390/boot/bzImage).
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
    /// Entry protocol: auto (x86_64 also pvh or linux64).
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
    /// virtio-blk disk as PATH[,ro][,serial=S][,cache=none|writethrough|writeback]; repeatable.
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
    /// Seconds from the power-button press on SIGTERM/SIGINT to the forced stop.
    #[arg(long, default_value_t = 30)]
    pub stop_timeout: u64,
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
    // One VM's few threads do not need a malloc arena each (every arena costs resident
    // pages of its own); they allocate little after start-up.
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only tunes the allocator; it is called before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    // Blocked before the VM's threads exist, so they inherit the mask and only the
    // watcher takes these signals.
    let signals = StopSignals::block().map_err(|e| VmError::Io("the signal mask", e))?;
    // Raw before the guest runs, so its first keystrokes already reach it unchanged.
    let _raw = match args.console {
        ConsoleConfig::Stdio => RawMode::enable(libc::STDIN_FILENO, Keys::SignalsStay)
            .unwrap_or_else(|e| {
                tracing::warn!("cannot put the terminal in raw mode: {e}");
                None
            }),
        _ => None,
    };
    let handle = super::create_running(args.config())?;
    signals
        .watch(handle.clone(), Duration::from_secs(args.stop_timeout))
        .map_err(|e| VmError::Io("the signal watcher", e))?;
    Ok(handle.wait())
}

/// SIGINT and SIGTERM, blocked in the calling thread (and so in the threads it creates
/// afterwards) and taken synchronously by a watcher thread; the mask is restored on drop.
struct StopSignals {
    set: libc::sigset_t,
    old: libc::sigset_t,
}

impl StopSignals {
    fn block() -> io::Result<StopSignals> {
        // SAFETY: all-zero sigsets are valid storage; sigemptyset/sigaddset initialise
        // `set`, pthread_sigmask fills `old`.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            Ok(StopSignals { set, old })
        }
    }

    /// Starts the thread that turns the first signal into a power-button stop with
    /// `timeout` and a second one into a forced stop; it ends with the VM.
    fn watch(&self, handle: VmHandle, timeout: Duration) -> io::Result<()> {
        let set = self.set;
        std::thread::Builder::new()
            .name("signals".into())
            .stack_size(128 << 10)
            .spawn(move || {
                let poll = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 200_000_000,
                };
                let mut pressed = false;
                while handle.wait_timeout(Duration::ZERO).is_none() {
                    // SAFETY: `set` is an initialised sigset; a null siginfo is allowed.
                    let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &poll) };
                    if sig <= 0 {
                        continue;
                    }
                    let name = if sig == libc::SIGINT {
                        "SIGINT"
                    } else {
                        "SIGTERM"
                    };
                    let result = if pressed {
                        eprintln!("monovirt: {name} again: stopping the VM now");
                        handle.kill()
                    } else {
                        pressed = true;
                        eprintln!(
                            "monovirt: {name}: pressed the power button; stopping the VM in {} s",
                            timeout.as_secs()
                        );
                        handle.stop(timeout)
                    };
                    if let Err(e) = result {
                        tracing::debug!("stop on {name}: {e}");
                    }
                }
            })
            .map(|_| ())
    }
}

impl Drop for StopSignals {
    fn drop(&mut self) {
        // SAFETY: `old` is the mask pthread_sigmask returned in `block`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}
