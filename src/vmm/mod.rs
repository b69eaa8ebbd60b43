//! The in-process VMM: one KVM VM per [`VmHandle`], many per process.
//!
//! - [`vm`]: building a VM (memfd [`memory`], in-kernel irqchip and PIT, legacy devices
//!   on the port bus, vCPUs, kernel and boot hand-off through `arch`) and its event
//!   thread `vmm-<vm>`;
//! - [`vcpu`]: the `vcpu-<vm>-<n>` threads (blocking `KVM_RUN`, pause and kick);
//! - [`handle`]: the cloneable command handle (start, pause, resume, stop, kill) and
//!   the exit await; [`exit`]: why a VM ended;
//! - [`console`]: where COM1 goes; [`config`]: what a VM is made of;
//! - [`device_manager`]: the PCI root complex and virtio devices (configured by
//!   [`device_config`]), with MSI-X through KVM irqfds and GSI routes ([`msi`]);
//! - [`run`]: `monovirt run`, one VM in the foreground; [`terminal`]: its raw-mode stdin;
//! - [`stats`]: read-only vCPU, memory and device statistics for `/metrics`.
//!
//! Trust boundary: everything the guest writes (port/MMIO data, ACPI register values)
//! is handled on its vCPU thread by code that checks ranges and never panics on guest
//! input; guest-triggered logging is at `trace` level. A panic in a VM's threads is
//! caught and ends that VM with [`ExitReason::Crash`].

pub mod config;
pub mod console;
pub mod device_config;
pub mod device_manager;
pub mod exit;
pub mod handle;
pub mod memory;
pub mod msi;
pub mod run;
pub mod stats;
pub mod terminal;
pub mod vcpu;
pub mod vm;

pub use config::VmConfig;
pub use console::{ConsoleConfig, ConsoleRing};
pub use exit::ExitReason;
pub use handle::{Command, CommandError, VmHandle};
pub use vm::{create, VmError};
