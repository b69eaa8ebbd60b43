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

use std::path::PathBuf;
use std::sync::Arc;

use arch::kvm::VmFd;
use arch::ppc64le::{boot, fdt, kvm as ppc, layout, regs, rtas};
use devices::pci::PciBus;
use vm_memory::{Bytes, GuestAddress};

use super::builder::{self, kvm_err, BuildError, Reporting};
use super::config::VmConfig;
use super::console;
use super::handle::VmHandle;
use super::memory::Memory;

/// Errors creating a pseries VM. Each names what the operator must fix.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A step every machine takes.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// Host set-up around the VM (`vmm::run`'s signal handling).
    #[error("Cannot set up {0}")]
    Io(&'static str, #[source] std::io::Error),
    /// Virtio devices are not offered yet.
    #[error("Invalid VM configuration: virtio devices are not offered on ppc64le yet (they need MSIs through RTAS)")]
    VirtioDevices,
    /// Kernel image.
    #[error("Cannot load kernel {}", .0.display())]
    Boot(PathBuf, #[source] boot::BootError),
    /// Device tree.
    #[error("Cannot build the device tree")]
    Fdt(#[from] fdt::FdtError),
    /// Boot data does not fit the real mode area.
    #[error("{0} does not fit guest memory")]
    Placement(&'static str),
}

/// Everything that must outlive the vCPUs.
struct KeepAlive {
    _vm: Arc<VmFd>,
    _xics: std::fs::File,
    _memory: Memory,
}

/// Checks what this machine can build before touching KVM; returns the memory size.
pub fn validate(config: &VmConfig) -> Result<u64, VmError> {
    let mem_size = builder::memory_size(config, boot::MIN_MEMORY, "RTAS start-cpu")?;
    if !config.disks.is_empty()
        || !config.nics.is_empty()
        || config.vsock.is_some()
        || config.rng
        || config.virtio_console.is_some()
    {
        return Err(VmError::VirtioDevices);
    }
    Ok(mem_size)
}

/// Creates a pseries VM from `config` and its event thread; the vCPU starts on
/// [`VmHandle::start`].
pub fn create(config: VmConfig) -> Result<VmHandle, VmError> {
    let mem_size = validate(&config)?;
    let kernel = builder::read(&config.kernel)?;
    let initrd = config.initrd.as_deref().map(builder::read).transpose()?;

    let kvm = builder::open_kvm(&[(arch::kvm::CAP_IRQFD, "irqfd")])?;
    let vm = Arc::new(
        kvm.create_vm(ppc::VM_TYPE_HV)
            .map_err(kvm_err("create a KVM-HV VM"))?,
    );
    builder::require(
        |cap| vm.check_extension(cap),
        &[
            (ppc::CAP_PPC_PAPR, "PAPR guests"),
            (ppc::CAP_IRQ_XICS, "the in-kernel XICS"),
        ],
    )?;
    // SAFETY: KeepAlive holds the memory and drops it after the VM fd.
    let memory = unsafe { builder::guest_memory(&vm, &config, &layout::ram_regions(mem_size)) }?;

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

    let out = console::output(&config.console).map_err(|e| BuildError::Io("the console", e))?;
    let platform = papr::Pseries::new(
        papr::Papr::new(memory.guest.clone(), out, Arc::new(PciBus::new())),
        vm.clone(),
    );
    let keep_alive = KeepAlive {
        _vm: vm,
        _xics: xics,
        _memory: memory,
    };
    let vm = Reporting::new()?.start(
        &config,
        vec![vcpu],
        Arc::new(platform),
        Box::new(keep_alive),
    );
    Ok(vm?)
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
        assert!(
            matches!(validate(&c), Err(VmError::Build(BuildError::Config(m))) if m.contains("start-cpu"))
        );
        c.vcpus = 1;
        c.rng = true;
        assert!(matches!(validate(&c), Err(VmError::VirtioDevices)));
        c.rng = false;
        c.memory_mib = 8;
        assert!(matches!(
            validate(&c),
            Err(VmError::Build(BuildError::Config(_)))
        ));
    }
}
