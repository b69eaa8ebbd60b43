//! The s390x machine: a KVM-on-Z guest (QEMU calls this machine s390-ccw-virtio),
//! built on our own KVM layer (`arch::kvm`, `arch::s390x::kvm`). The kernel image is
//! loaded at 0 with its parameter area filled in and entered at 0x10000 in 64-bit mode,
//! as `arch::s390x` lays it out; the console is the SCLP VT220 console; [`service`]
//! serves every exit.
//!
//! Channel I/O is intercepted (`KVM_CAP_S390_CSS_SUPPORT`) and served by the VM's
//! `devices::virtio::transport::ccw::ChannelSubsystem`, whose subchannels are the
//! VM's virtio devices ([`virtio_ccw`]: notify ioeventfds, the device thread, adapter
//! interrupts through irqfds on S390 adapter routes). Not yet offered
//! (docs/arches.md): Read SCP Info, secondary vCPUs (user controlled CPU state), the
//! power button (SCLP signal quiesce).

pub mod service;
pub mod virtio_ccw;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arch::kvm::{self, Kvm, UserMemoryRegion, VmFd};
use arch::s390x::{boot, kvm as s390, layout, regs};
use devices::virtio::transport::ccw::ChannelSubsystem;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::config::VmConfig;
use super::console::{self, ConsoleConfig};
use super::exit::ExitSlot;
use super::handle::VmHandle;
use super::machine::{self, MachineParts};
use super::memory::{self, Memory};
use super::stats::VmStats;
use super::virtio_devices::{self, Crash, DeviceThread, VirtioDevicesError};

/// Errors creating an s390x VM. Each names what the operator must fix.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// Invalid configuration.
    #[error("Invalid VM configuration: {0}")]
    Config(String),
    /// Kernel or initrd file.
    #[error("Cannot read {}", .0.display())]
    Read(PathBuf, #[source] std::io::Error),
    /// /dev/kvm.
    #[error("Cannot open /dev/kvm")]
    KvmOpen(#[source] std::io::Error),
    /// A KVM capability we need.
    #[error("KVM lacks {0}")]
    KvmCap(&'static str),
    /// A KVM ioctl.
    #[error("KVM failed to {0}")]
    Kvm(&'static str, #[source] std::io::Error),
    /// Guest memory.
    #[error("Cannot create guest memory")]
    Memory(#[from] memory::MemoryError),
    /// Kernel image and parameters.
    #[error("Cannot load kernel {}", .0.display())]
    Boot(PathBuf, #[source] boot::BootError),
    /// The initrd does not fit.
    #[error("Initrd does not fit guest memory")]
    InitrdPlacement,
    /// Console output, eventfds, threads.
    #[error("Cannot set up {0}")]
    Io(&'static str, #[source] std::io::Error),
    /// The virtio device models or their thread.
    #[error(transparent)]
    Devices(#[from] VirtioDevicesError),
    /// Wiring the devices to KVM.
    #[error(transparent)]
    Ccw(#[from] virtio_ccw::CcwDevicesError),
}

fn kvm_err(what: &'static str) -> impl FnOnce(std::io::Error) -> VmError {
    move |e| VmError::Kvm(what, e)
}

fn read(path: &Path) -> Result<Vec<u8>, VmError> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(|e| VmError::Read(path.to_path_buf(), e))?;
    Ok(data)
}

/// Everything that must outlive the vCPUs, dropped in this order: the device thread
/// stops before the VM and its memory go.
struct KeepAlive {
    _devices: DeviceThread,
    _vm: Arc<VmFd>,
    _memory: Memory,
}

/// Checks what this machine can build before touching KVM; returns the memory size.
pub fn validate(config: &VmConfig) -> Result<u64, VmError> {
    if config.vcpus != 1 {
        return Err(VmError::Config(format!(
            "{} vCPUs: s390x guests run with 1 vCPU until user-controlled CPU state is offered",
            config.vcpus
        )));
    }
    // KVM on Z maps guest memory in 1 MiB segments; sizes are whole MiB already.
    config
        .memory_mib
        .checked_mul(1 << 20)
        .filter(|m| *m >= boot::MIN_MEMORY)
        .ok_or_else(|| {
            VmError::Config(format!(
                "memory must be at least {} MiB",
                boot::MIN_MEMORY >> 20
            ))
        })
}

/// Creates an s390x VM from `config` and its event thread; the vCPU starts on
/// [`VmHandle::start`].
pub fn create(config: VmConfig) -> Result<VmHandle, VmError> {
    let mem_size = validate(&config)?;
    let kernel = read(&config.kernel)?;
    let initrd = config.initrd.as_deref().map(read).transpose()?;

    let kvm = Kvm::new().map_err(VmError::KvmOpen)?;
    for (cap, what) in [
        (kvm::CAP_USER_MEMORY, "user memory regions"),
        (kvm::CAP_IMMEDIATE_EXIT, "immediate_exit"),
    ] {
        if kvm.check_extension(cap) <= 0 {
            return Err(VmError::KvmCap(what));
        }
    }
    let vm = Arc::new(
        kvm.create_vm(s390::VM_TYPE)
            .map_err(kvm_err("create a VM"))?,
    );

    let memory = memory::create_regions(
        &config.name,
        &layout::ram_regions(mem_size),
        config.hugepages,
    )?;
    for (slot, region) in memory.guest.iter().enumerate() {
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|e| VmError::Config(format!("guest region without mapping: {e}")))?;
        let r = UserMemoryRegion {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the region is a live mapping of `memory.guest`, which KeepAlive holds
        // until after the VM fd (and so KVM's use of it) is dropped.
        unsafe { vm.set_user_memory_region(r) }.map_err(kvm_err("register guest memory"))?;
    }

    let initrd_range = match &initrd {
        Some(data) => {
            let start =
                layout::initrd_address(kernel.len() as u64).ok_or(VmError::InitrdPlacement)?;
            start
                .checked_add(data.len() as u64)
                .filter(|end| *end <= mem_size)
                .ok_or(VmError::InitrdPlacement)?;
            memory
                .guest
                .write_slice(data, GuestAddress(start))
                .map_err(|_| VmError::InitrdPlacement)?;
            Some((start, data.len() as u64))
        }
        None => None,
    };
    boot::load_kernel(&memory.guest, &kernel, &config.cmdline, initrd_range)
        .map_err(|e| VmError::Boot(config.kernel.clone(), e))?;

    let vcpu = vm.create_vcpu(0).map_err(kvm_err("create a vCPU"))?;
    s390::initial_reset(&vcpu).map_err(kvm_err("reset the vCPU"))?;
    let psw = regs::boot_psw(layout::KERNEL_ENTRY);
    s390::set_initial_psw(&vcpu, psw.mask, psw.addr).map_err(kvm_err("set the boot PSW"))?;
    s390::set_regs(
        &vcpu,
        &s390::Regs {
            gprs: regs::BOOT_GPRS,
        },
    )
    .map_err(kvm_err("set vCPU registers"))?;

    // The virtio devices, each on a subchannel of the channel subsystem that serves the
    // channel I/O instructions KVM passes to us.
    let exit = Arc::new(ExitSlot::default());
    let exit_evt = Arc::new(EventFd::new(EFD_NONBLOCK).map_err(|e| VmError::Io("an eventfd", e))?);
    let crash: Crash = {
        let (exit, exit_evt) = (exit.clone(), exit_evt.clone());
        Arc::new(move |detail| {
            exit.report(super::exit::ExitReason::Crash { detail });
            let _ = exit_evt.write(1);
        })
    };
    let stats = Arc::new(VmStats::new(None));
    let models = virtio_devices::build(&config, &stats, crash.clone())?;
    s390::enable_css_support(&vm).map_err(kvm_err("intercept channel I/O"))?;
    let sink = if models.is_empty() {
        virtio_ccw::KvmIoInterrupts::new(vm.clone())
    } else {
        virtio_ccw::KvmIoInterrupts::with_adapter_routes(vm.clone())?
    };
    let mut css = ChannelSubsystem::new(Arc::new(memory.guest.clone()), Arc::new(sink));
    let polled = virtio_ccw::attach(&mut css, &*vm, models)?;
    let device_thread = virtio_devices::spawn(&config.name, polled, crash)?;

    let out = console::output(&config.console).map_err(|e| VmError::Io("the console", e))?;
    let platform = service::S390::new(
        service::Sclp::new(memory.guest.clone(), out),
        vm.clone(),
        css,
    );
    machine::start(MachineParts {
        name: config.name.as_str().into(),
        vcpus: vec![vcpu],
        platform: Arc::new(platform),
        keep_alive: Box::new(KeepAlive {
            _devices: device_thread,
            _vm: vm,
            _memory: memory,
        }),
        console_input: matches!(config.console, ConsoleConfig::Stdio),
        console_ring: match &config.console {
            ConsoleConfig::Ring(ring) => Some(ring.clone()),
            _ => None,
        },
        exit,
        exit_evt,
        stats,
    })
    .map_err(|e| VmError::Io("the VM threads", e))
}

// Tests may unwrap: a failed unwrap is a failed test.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn validation_refuses_what_the_machine_cannot_offer() {
        let mut c = VmConfig::new("z", "/nonexistent");
        assert_eq!(validate(&c).unwrap(), 128 << 20);
        c.vcpus = 4;
        assert!(matches!(validate(&c), Err(VmError::Config(_))));
        c.vcpus = 1;
        c.disks.push("/dev/null".parse().unwrap());
        c.rng = true;
        assert!(
            validate(&c).is_ok(),
            "virtio devices are virtio-ccw devices"
        );
        c.memory_mib = 1;
        assert!(matches!(validate(&c), Err(VmError::Config(_))));
    }
}
