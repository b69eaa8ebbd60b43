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

use std::path::PathBuf;
use std::sync::Arc;

use arch::kvm::VmFd;
use arch::s390x::{boot, kvm as s390, layout, regs};
use devices::virtio::transport::ccw::ChannelSubsystem;
use vm_memory::{Bytes, GuestAddress};

use super::builder::{self, kvm_err, BuildError, Reporting};
use super::config::VmConfig;
use super::console;
use super::handle::VmHandle;
use super::memory::Memory;
use super::virtio_devices::{self, DeviceThread, VirtioDevicesError};

/// Errors creating an s390x VM. Each names what the operator must fix.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A step every machine takes.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// Host set-up around the VM (`vmm::run`'s signal handling).
    #[error("Cannot set up {0}")]
    Io(&'static str, #[source] std::io::Error),
    /// Kernel image and parameters.
    #[error("Cannot load kernel {}", .0.display())]
    Boot(PathBuf, #[source] boot::BootError),
    /// The initrd does not fit.
    #[error("Initrd does not fit guest memory")]
    InitrdPlacement,
    /// The virtio device models or their thread.
    #[error(transparent)]
    Devices(#[from] VirtioDevicesError),
    /// Wiring the devices to KVM.
    #[error(transparent)]
    Ccw(#[from] virtio_ccw::CcwDevicesError),
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
    // KVM on Z maps guest memory in 1 MiB segments; sizes are whole MiB already.
    Ok(builder::memory_size(
        config,
        boot::MIN_MEMORY,
        "user-controlled CPU state",
    )?)
}

/// Creates an s390x VM from `config` and its event thread; the vCPU starts on
/// [`VmHandle::start`].
pub fn create(config: VmConfig) -> Result<VmHandle, VmError> {
    let mem_size = validate(&config)?;
    let kernel = builder::read(&config.kernel)?;
    let initrd = config.initrd.as_deref().map(builder::read).transpose()?;

    let kvm = builder::open_kvm(&[])?;
    let vm = Arc::new(
        kvm.create_vm(s390::VM_TYPE)
            .map_err(kvm_err("create a VM"))?,
    );
    // SAFETY: KeepAlive holds the memory and drops it after the VM fd.
    let memory = unsafe { builder::guest_memory(&vm, &config, &layout::ram_regions(mem_size)) }?;

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
    let reporting = Reporting::new()?;
    let crash = reporting.crash();
    let models = virtio_devices::build(&config, &reporting.stats, crash.clone())?;
    s390::enable_css_support(&vm).map_err(kvm_err("intercept channel I/O"))?;
    let sink = if models.is_empty() {
        virtio_ccw::KvmIoInterrupts::new(vm.clone())
    } else {
        virtio_ccw::KvmIoInterrupts::with_adapter_routes(vm.clone())?
    };
    let mut css = ChannelSubsystem::new(Arc::new(memory.guest.clone()), Arc::new(sink));
    let polled = virtio_ccw::attach(&mut css, &*vm, models)?;
    let device_thread = virtio_devices::spawn(&config.name, polled, crash)?;

    let out = console::output(&config.console).map_err(|e| BuildError::Io("the console", e))?;
    let platform = service::S390::new(
        service::Sclp::new(memory.guest.clone(), out),
        vm.clone(),
        css,
    );
    let keep_alive = KeepAlive {
        _devices: device_thread,
        _vm: vm,
        _memory: memory,
    };
    let vm = reporting.start(
        &config,
        vec![vcpu],
        Arc::new(platform),
        Box::new(keep_alive),
    );
    Ok(vm?)
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
        assert!(matches!(
            validate(&c),
            Err(VmError::Build(BuildError::Config(_)))
        ));
        c.vcpus = 1;
        c.disks.push("/dev/null".parse().unwrap());
        c.rng = true;
        assert!(
            validate(&c).is_ok(),
            "virtio devices are virtio-ccw devices"
        );
        c.memory_mib = 1;
        assert!(matches!(
            validate(&c),
            Err(VmError::Build(BuildError::Config(_)))
        ));
    }
}
