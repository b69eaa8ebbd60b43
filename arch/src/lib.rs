//! The guest platform per architecture: memory layout, boot protocol and vCPU set-up.
//!
//! Each architecture is a folder with the same file names, and this crate re-exports the
//! current target's modules under one set of names (the shape of Firecracker's
//! `src/vmm/src/arch/mod.rs`), so generic VMM code says `arch::layout::…`,
//! `arch::boot::…`, `arch::regs::…` and never names an architecture.
//!
//! # The interface every architecture provides
//!
//! | module | pure (any host) | KVM-facing (own target only) |
//! | --- | --- | --- |
//! | `layout` | guest physical map: [`layout::ram_regions`], device windows (MMIO, PCI ECAM), where boot data goes | — |
//! | `boot` | [`boot::BootProtocol`], [`boot::BootConfig`], building the firmware-less hand-off (x86: e820 + boot_params / PVH start_info + ACPI; ppc64le: flattened device tree; s390x: IPL parameter block) | `boot::load_kernel` (reads a kernel file into guest memory), `boot::configure_system` (writes the hand-off), both returning the [`boot::BootEntry`] the boot vCPU starts at |
//! | `regs` | register values as plain data | `regs::configure_vcpu` (CPU model, MSRs/special registers, and for the boot vCPU the entry state) |
//!
//! Architecture-specific helpers live beside them under the same rule (pure logic
//! unit-tested everywhere, ioctls only on the target): x86_64 has `cpuid` (KubeVirt
//! `domain.cpu` model and feature policies applied to a CPUID entry list, topology
//! leaves), `acpi` (RSDP/XSDT/FADT/FACS/MADT/DSDT/MCFG bytes), `e820`, `gdt`, `paging`
//! and `interrupts` (local APIC LINT set-up). ppc64le adds `fdt` (the pseries device
//! tree, vm-fdt), `hcall` (the hvterm console hypercalls) and `rtas`; s390x adds
//! `lowcore` (the prefix area) and `sclp` (the SCLP console event buffers). Their KVM
//! halves are not written yet (docs/arches.md), so on those targets this crate exports
//! only the pure modules.
//!
//! Guest-visible structures use explicit-endian types (`vm_memory::Le32`, `Be64`, or the
//! little-endian zerocopy types the `acpi_tables` crate uses): s390x is big-endian, and
//! code that is unit-tested on one host must mean the same bytes on every host.
//!
//! The x86_64 module itself compiles on every host (its tables, layouts and CPUID logic
//! are tested anywhere); only its loader and vCPU register code are gated on
//! `target_arch = "x86_64"`, because linux-loader and the KVM x86 bindings are.

// Tests may unwrap: a failed unwrap is a failed test.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod cpu;
pub mod kvm;
pub mod ppc64le;
pub mod s390x;
pub mod x86_64;

#[cfg(target_arch = "x86_64")]
pub use crate::x86_64::{acpi, boot, cpuid, e820, gdt, interrupts, layout, paging, regs};

#[cfg(all(target_arch = "powerpc64", target_endian = "little"))]
pub use crate::ppc64le::{boot, fdt, hcall, kvm as platform_kvm, layout, regs, rtas};

#[cfg(target_arch = "s390x")]
pub use crate::s390x::{boot, kvm as platform_kvm, layout, lowcore, regs, sclp};
