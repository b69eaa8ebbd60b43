//! The ppc64le machine: a PAPR "pseries" guest on KVM-HV, built on our own KVM layer
//! (`arch::kvm`, `arch::ppc64le::kvm`). The kernel (ELF vmlinux) is entered directly
//! with a flattened device tree in r3 and no firmware, as `arch::ppc64le` lays it out;
//! the console is hvterm over hypercalls, RTAS is a five-instruction blob that turns
//! each call into the `KVMPPC_H_RTAS` hypercall, interrupts go through the in-kernel
//! XICS, and [`papr`] serves every exit.
//!
//! Not yet offered (docs/arches.md): virtio devices on the PCI host bridge (they need
//! MSIs through RTAS `ibm,change-msi` and XICS sources), secondary vCPUs (RTAS
//! `start-cpu`), the power button (EPOW events).

pub mod papr;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arch::kvm::{self, Kvm, UserMemoryRegion, VmFd};
use arch::ppc64le::{boot, fdt, kvm as ppc, layout, regs, rtas};
use devices::pci::PciBus;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::config::VmConfig;
use super::console::{self, ConsoleConfig};
use super::exit::ExitSlot;
use super::handle::VmHandle;
use super::machine::{self, MachineParts};
use super::memory::{self, Memory};

/// Errors creating a pseries VM. Each names what the operator must fix.
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
    /// Kernel image.
    #[error("Cannot load kernel {}", .0.display())]
    Boot(PathBuf, #[source] boot::BootError),
    /// Device tree.
    #[error("Cannot build the device tree")]
    Fdt(#[from] fdt::FdtError),
    /// Boot data does not fit the real mode area.
    #[error("{0} does not fit guest memory")]
    Placement(&'static str),
    /// Console output, eventfds, threads.
    #[error("Cannot set up {0}")]
    Io(&'static str, #[source] std::io::Error),
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

/// Everything that must outlive the vCPUs.
struct KeepAlive {
    _vm: Arc<VmFd>,
    _xics: File,
    _memory: Memory,
}

/// Checks what this machine can build before touching KVM.
pub fn validate(config: &VmConfig) -> Result<u64, VmError> {
    if config.vcpus != 1 {
        return Err(VmError::Config(format!(
            "{} vCPUs: ppc64le guests run with 1 vCPU until RTAS start-cpu is offered",
            config.vcpus
        )));
    }
    if !config.disks.is_empty()
        || !config.nics.is_empty()
        || config.vsock.is_some()
        || config.rng
        || config.virtio_console.is_some()
    {
        return Err(VmError::Config(
            "virtio devices are not offered on ppc64le yet (they need MSIs through RTAS)".into(),
        ));
    }
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

/// Creates a pseries VM from `config` and its event thread; the vCPU starts on
/// [`VmHandle::start`].
pub fn create(config: VmConfig) -> Result<VmHandle, VmError> {
    let mem_size = validate(&config)?;
    let kernel = read(&config.kernel)?;
    let initrd = config.initrd.as_deref().map(read).transpose()?;

    let kvm = Kvm::new().map_err(VmError::KvmOpen)?;
    for (cap, what) in [
        (kvm::CAP_USER_MEMORY, "user memory regions"),
        (kvm::CAP_IMMEDIATE_EXIT, "immediate_exit"),
        (kvm::CAP_IRQFD, "irqfd"),
    ] {
        if kvm.check_extension(cap) <= 0 {
            return Err(VmError::KvmCap(what));
        }
    }
    let vm = Arc::new(
        kvm.create_vm(ppc::VM_TYPE_HV)
            .map_err(kvm_err("create a KVM-HV VM"))?,
    );
    for (cap, what) in [
        (ppc::CAP_PPC_PAPR, "PAPR guests"),
        (ppc::CAP_IRQ_XICS, "the in-kernel XICS"),
    ] {
        if vm.check_extension(cap) <= 0 {
            return Err(VmError::KvmCap(what));
        }
    }

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

    // Kernel, initrd, RTAS blob and device tree.
    let loaded = boot::load_elf(&memory.guest, &kernel)
        .map_err(|e| VmError::Boot(config.kernel.clone(), e))?;
    let rtas_base = layout::rtas_address(mem_size).ok_or(VmError::Placement("RTAS"))?;
    let fdt_base = layout::fdt_address(mem_size).ok_or(VmError::Placement("the device tree"))?;
    let initrd_range = match &initrd {
        Some(data) => {
            let start = layout::initrd_address(loaded.end).ok_or(VmError::Placement("initrd"))?;
            let end = start
                .checked_add(data.len() as u64)
                .filter(|end| *end <= rtas_base)
                .ok_or(VmError::Placement("initrd"))?;
            memory
                .guest
                .write_slice(data, GuestAddress(start))
                .map_err(|_| VmError::Placement("initrd"))?;
            Some((start, end))
        }
        None => None,
    };
    if loaded.end > rtas_base {
        return Err(VmError::Placement("kernel"));
    }
    let blob: Vec<u8> = rtas::RTAS_BLOB
        .iter()
        .flat_map(|w| w.to_be_bytes())
        .collect();
    memory
        .guest
        .write_slice(&blob, GuestAddress(rtas_base))
        .map_err(|_| VmError::Placement("RTAS"))?;
    let tree = fdt::build(&fdt::FdtConfig {
        vcpus: config.vcpus,
        mem_size,
        cmdline: config.cmdline.clone(),
        initrd: initrd_range,
        rtas_base,
    })?;
    memory
        .guest
        .write_slice(&tree, GuestAddress(fdt_base))
        .map_err(|_| VmError::Placement("the device tree"))?;

    // Interrupt controller and the vCPU.
    let xics = ppc::create_xics(&vm, XICS_FIRST_IRQ, XICS_IRQS, true)
        .map_err(kvm_err("create the XICS"))?;
    let vcpu = vm.create_vcpu(0).map_err(kvm_err("create a vCPU"))?;
    ppc::enable_papr(&vcpu).map_err(kvm_err("enable PAPR mode"))?;
    ppc::connect_xics(&vcpu, &xics, 0).map_err(kvm_err("connect the vCPU to the XICS"))?;
    let entry = regs::boot_regs(loaded.entry, fdt_base, layout::KERNEL_START);
    let mut state = ppc::get_regs(&vcpu).map_err(kvm_err("read vCPU registers"))?;
    state.pc = entry.pc;
    state.msr = entry.msr;
    state.gpr = entry.gpr;
    ppc::set_regs(&vcpu, &state).map_err(kvm_err("set vCPU registers"))?;

    let out = console::output(&config.console).map_err(|e| VmError::Io("the console", e))?;
    let platform = papr::Pseries::new(
        papr::Papr::new(memory.guest.clone(), out, Arc::new(PciBus::new())),
        vm.clone(),
    );
    let exit_evt = Arc::new(EventFd::new(EFD_NONBLOCK).map_err(|e| VmError::Io("an eventfd", e))?);
    machine::start(MachineParts {
        name: config.name.as_str().into(),
        vcpus: vec![vcpu],
        platform: Arc::new(platform),
        keep_alive: Box::new(KeepAlive {
            _vm: vm,
            _xics: xics,
            _memory: memory,
        }),
        console_input: matches!(config.console, ConsoleConfig::Stdio),
        console_ring: match &config.console {
            ConsoleConfig::Ring(ring) => Some(ring.clone()),
            _ => None,
        },
        exit: Arc::new(ExitSlot::default()),
        exit_evt,
        stats: Arc::new(super::stats::VmStats::new(None)),
    })
    .map_err(|e| VmError::Io("the VM threads", e))
}

/// First XICS source number (QEMU's pseries uses the same base for its sources).
pub const XICS_FIRST_IRQ: u32 = 0x1000;
/// XICS sources created for the machine.
pub const XICS_IRQS: u32 = 16;

// Tests may unwrap: a failed unwrap is a failed test.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn validation_refuses_what_the_machine_cannot_offer() {
        let mut c = VmConfig::new("p", "/nonexistent");
        assert_eq!(validate(&c).unwrap(), 128 << 20);
        c.vcpus = 2;
        assert!(matches!(validate(&c), Err(VmError::Config(m)) if m.contains("start-cpu")));
        c.vcpus = 1;
        c.rng = true;
        assert!(matches!(validate(&c), Err(VmError::Config(m)) if m.contains("virtio")));
        c.rng = false;
        c.memory_mib = 8;
        assert!(matches!(validate(&c), Err(VmError::Config(_))));
    }
}
