//! The steps every machine on our own KVM layer (`arch::kvm`: the IBM machines
//! [`super::pseries`] and [`super::s390_ccw`]) takes to build a VM, and their
//! [`BuildError`]: checking the configuration, reading the boot files, opening KVM with
//! the capabilities the machine needs, guest memory registered with the VM, and the
//! hand-off of the built VM to [`super::machine::start`]. Each machine adds its own
//! boot protocol and devices in between.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arch::kvm::{self, Kvm, UserMemoryRegion, VcpuFd, VmFd};
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::config::VmConfig;
use super::exit::{ExitReason, ExitSlot};
use super::handle::VmHandle;
use super::machine::{self, MachineParts, Platform};
use super::memory::{self, Memory};
use super::stats::VmStats;
use super::virtio_devices::Crash;

/// Errors of the steps every machine takes. Each names what the operator must fix.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Invalid configuration.
    #[error("Invalid VM configuration: {0}")]
    Config(String),
    /// Kernel or initrd file.
    #[error("Cannot read {}", .0.display())]
    Read(PathBuf, #[source] io::Error),
    /// /dev/kvm.
    #[error("Cannot open /dev/kvm")]
    KvmOpen(#[source] io::Error),
    /// A KVM capability the machine needs.
    #[error("KVM lacks {0}")]
    KvmCap(&'static str),
    /// A KVM ioctl.
    #[error("KVM failed to {0}")]
    Kvm(&'static str, #[source] io::Error),
    /// Guest memory.
    #[error("Cannot create guest memory")]
    Memory(#[from] memory::MemoryError),
    /// Console output, eventfds, threads.
    #[error("Cannot set up {0}")]
    Io(&'static str, #[source] io::Error),
}

/// Maps a failed KVM ioctl to [`BuildError::Kvm`] saying what it was to do.
pub fn kvm_err(what: &'static str) -> impl FnOnce(io::Error) -> BuildError {
    move |e| BuildError::Kvm(what, e)
}

/// The guest memory size in bytes of a machine that runs one vCPU for now
/// (`one_vcpu_until` says what more need) and at least `min_memory` bytes of RAM.
pub fn memory_size(
    config: &VmConfig,
    min_memory: u64,
    one_vcpu_until: &str,
) -> Result<u64, BuildError> {
    if config.vcpus != 1 {
        return Err(BuildError::Config(format!(
            "{} vCPUs: this machine runs 1 vCPU until {one_vcpu_until} is offered",
            config.vcpus
        )));
    }
    config
        .memory_mib
        .checked_mul(1 << 20)
        .filter(|m| *m >= min_memory)
        .ok_or_else(|| {
            BuildError::Config(format!("memory must be at least {} MiB", min_memory >> 20))
        })
}

/// The whole of a boot file (kernel, initrd).
pub fn read(path: &Path) -> Result<Vec<u8>, BuildError> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(|e| BuildError::Read(path.to_path_buf(), e))?;
    Ok(data)
}

/// Fails with [`BuildError::KvmCap`] naming the first of `caps` (capability, what it
/// is) that `check` (a system or VM `KVM_CHECK_EXTENSION`) does not report.
pub fn require(check: impl Fn(u32) -> i32, caps: &[(u32, &'static str)]) -> Result<(), BuildError> {
    match caps.iter().find(|(cap, _)| check(*cap) <= 0) {
        Some((_, what)) => Err(BuildError::KvmCap(what)),
        None => Ok(()),
    }
}

/// Opens /dev/kvm and checks the capabilities every machine needs, and `caps`.
pub fn open_kvm(caps: &[(u32, &'static str)]) -> Result<Kvm, BuildError> {
    let kvm = Kvm::new().map_err(BuildError::KvmOpen)?;
    require(
        |cap| kvm.check_extension(cap),
        &[
            (kvm::CAP_USER_MEMORY, "user memory regions"),
            (kvm::CAP_IMMEDIATE_EXIT, "immediate_exit"),
        ],
    )?;
    require(|cap| kvm.check_extension(cap), caps)?;
    Ok(kvm)
}

/// Guest RAM of the `(start, size)` regions, each registered with `vm` as one memory
/// slot.
///
/// # Safety
/// The returned memory must outlive `vm`'s use of it: the caller drops the VM fd (and so
/// every vCPU) before the memory.
pub unsafe fn guest_memory(
    vm: &VmFd,
    config: &VmConfig,
    regions: &[(GuestAddress, u64)],
) -> Result<Memory, BuildError> {
    let memory = memory::create_regions(&config.name, regions, config.hugepages)?;
    for slot in memory.slots() {
        let slot = slot?;
        let r = UserMemoryRegion {
            slot: slot.slot,
            flags: 0,
            guest_phys_addr: slot.guest_phys_addr,
            memory_size: slot.size,
            userspace_addr: slot.host_addr,
        };
        // SAFETY: the region is a live mapping of `memory`, which the caller keeps until
        // after the VM fd (and so KVM's use of it) is dropped.
        unsafe { vm.set_user_memory_region(r) }.map_err(kvm_err("register guest memory"))?;
    }
    Ok(memory)
}

/// How a VM reports its end from outside its vCPU threads: the exit slot, the event that
/// wakes its event thread, and its statistics.
pub struct Reporting {
    /// Where the first exit reason goes.
    pub exit: Arc<ExitSlot>,
    /// Written when `exit` gets a reason.
    pub exit_evt: Arc<EventFd>,
    /// The VM's statistics (device metrics register here).
    pub stats: Arc<VmStats>,
}

impl Reporting {
    /// A fresh exit slot, its eventfd and empty statistics.
    pub fn new() -> Result<Self, BuildError> {
        Ok(Self {
            exit: Arc::new(ExitSlot::default()),
            exit_evt: Arc::new(
                EventFd::new(EFD_NONBLOCK).map_err(|e| BuildError::Io("an eventfd", e))?,
            ),
            stats: Arc::new(VmStats::new(None)),
        })
    }

    /// What a device thread calls when it fails: the VM ends with a crash.
    pub fn crash(&self) -> Crash {
        let (exit, exit_evt) = (self.exit.clone(), self.exit_evt.clone());
        Arc::new(move |detail| {
            exit.report(ExitReason::Crash { detail });
            let _ = exit_evt.write(1);
        })
    }

    /// Starts the event thread of the built VM (its vCPUs, boot vCPU first, with their
    /// registers set; `keep_alive` holds what must outlive them, dropped in field order).
    pub fn start(
        self,
        config: &VmConfig,
        vcpus: Vec<VcpuFd>,
        platform: Arc<dyn Platform>,
        keep_alive: Box<dyn std::any::Any + Send>,
    ) -> Result<VmHandle, BuildError> {
        machine::start(MachineParts {
            name: config.name.as_str().into(),
            vcpus,
            platform,
            keep_alive,
            console: config.console.clone(),
            exit: self.exit,
            exit_evt: self.exit_evt,
            stats: self.stats,
        })
        .map_err(|e| BuildError::Io("the VM threads", e))
    }
}

// Tests may unwrap: a failed unwrap is a failed test.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn one_vcpu_and_enough_memory() {
        let mut c = VmConfig::new("b", "/nonexistent");
        assert_eq!(memory_size(&c, 64 << 20, "start-cpu").unwrap(), 128 << 20);
        c.vcpus = 2;
        assert!(
            matches!(memory_size(&c, 64 << 20, "start-cpu"), Err(BuildError::Config(m)) if m.contains("start-cpu"))
        );
        c.vcpus = 1;
        c.memory_mib = 32;
        assert!(matches!(
            memory_size(&c, 64 << 20, "start-cpu"),
            Err(BuildError::Config(m)) if m.contains("64 MiB")
        ));
    }

    #[test]
    fn the_first_missing_capability_is_named() {
        let caps = [(1, "one"), (2, "two"), (3, "three")];
        assert!(require(|_| 1, &caps).is_ok());
        assert!(matches!(
            require(|cap| i32::from(cap != 2), &caps),
            Err(BuildError::KvmCap("two"))
        ));
        assert!(
            matches!(require(|_| 0, &caps), Err(BuildError::KvmCap("one"))),
            "0 means absent"
        );
    }

    #[test]
    fn boot_files_are_read_whole_or_named() {
        let dir = std::env::temp_dir().join(format!("builder-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("kernel");
        std::fs::write(&f, b"\x7fELF").unwrap();
        assert_eq!(read(&f).unwrap(), b"\x7fELF");
        let missing = dir.join("missing");
        assert!(matches!(read(&missing), Err(BuildError::Read(p, _)) if p == missing));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
