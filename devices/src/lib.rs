//! Emulated devices: `legacy` (serial, i8042, RTC, ACPI PM), `pci` and `virtio`. Devices
//! know nothing of the orchestrator: they take guest memory and an interrupt trigger.
//! [`bus`] routes guest port and MMIO accesses to them.

// Tests may unwrap: a failed unwrap is a failed test.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod bus;
pub mod legacy;
pub mod pci;
pub mod virtio;
