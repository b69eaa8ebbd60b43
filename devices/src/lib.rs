//! Emulated devices: `legacy` (serial, i8042, RTC), `pci` and `virtio`. Devices know
//! nothing of the orchestrator: they take guest memory and an interrupt trigger.

// Tests may unwrap: a failed unwrap is a failed test.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod pci;
pub mod virtio;
