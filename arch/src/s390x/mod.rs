//! s390x: KVM on IBM Z. The guest boots like a Linux kernel IPLed from a disk: the
//! kernel image at 0, its parameter area (command line, initrd) at 0x10400, entry at
//! 0x10000 in 64-bit addressing mode, with the SCLP console and virtio-ccw devices.
//!
//! Every file here is pure and unit-tested on any host: the guest memory map
//! ([`layout`]), the architected lowcore fields ([`lowcore`]), the parameter area
//! ([`boot`]), the initial PSW and registers ([`regs`]) and the SCLP console event
//! buffers ([`sclp`]), and the KVM-on-Z ioctls and exits ([`kvm`]). The virtio-ccw
//! transport is `devices::virtio::transport::ccw`: see docs/arches.md.

pub mod boot;
pub mod flic;
pub mod kvm;
pub mod layout;
pub mod lowcore;
pub mod regs;
pub mod sclp;
