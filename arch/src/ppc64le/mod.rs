//! ppc64le: the PAPR "pseries" platform monovirt presents to little-endian POWER guests
//! (LoPAR): a flattened device tree in r3, the hvterm console over hypercalls, and RTAS
//! for time, power-off and reboot.
//!
//! Every file here is pure and unit-tested on any host: the guest memory map
//! ([`layout`]), the device tree ([`fdt`]), the ELF vmlinux loader ([`boot`]), the entry
//! register state ([`regs`]), the console hypercalls ([`hcall`]) and RTAS call dispatch
//! ([`rtas`]). The KVM side (KVM-HV ioctls, the vCPU loop) is not written yet: see
//! docs/arches.md.

pub mod boot;
pub mod fdt;
pub mod hcall;
pub mod kvm;
pub mod layout;
pub mod regs;
pub mod rtas;
