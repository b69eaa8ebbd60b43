//! x86_64: the PC platform monovirt presents (see DESIGN.md "The platform the VMM
//! presents"): ACPI tables, e820, Linux 64-bit boot protocol and PVH, CPUID shaping,
//! long-mode boot state.
//!
//! Every file but `boot`'s loader half and `regs`'s KVM half is pure and unit-tested on
//! any host.

pub mod acpi;
pub mod boot;
pub mod cpuid;
pub mod e820;
pub mod gdt;
pub mod interrupts;
pub mod layout;
pub mod paging;
pub mod regs;
#[cfg(any(test, feature = "test-utils"))]
pub mod tiny_elf;
