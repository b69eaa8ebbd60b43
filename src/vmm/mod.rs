//! The in-process VMM: one KVM VM per [`VmHandle`], many per process.
//!
//! - [`vm`]: building a VM (memfd [`memory`], in-kernel irqchip and PIT, legacy devices
//!   on the port bus, vCPUs, kernel and boot hand-off through `arch`) and its event
//!   thread `vmm-<vm>`;
//! - [`vcpu`]: the `vcpu-<vm>-<n>` threads (blocking `KVM_RUN`, pause and kick);
//! - [`handle`]: the cloneable command handle (start, pause, resume, stop, kill) and
//!   the exit await; [`lifecycle`]: what every machine's event thread does with its
//!   commands; [`exit`]: why a VM ended;
//! - [`console`]: where COM1 goes; [`config`]: what a VM is made of;
//! - [`device_manager`]: the PCI root complex and virtio devices (configured by
//!   [`device_config`]), with MSI-X through KVM irqfds and GSI routes ([`msi`]);
//! - [`run`]: `monovirt run`, one VM in the foreground; [`terminal`]: its raw-mode stdin;
//! - [`stats`]: read-only vCPU, memory and device statistics for `/metrics`;
//! - [`pseries`] (ppc64le, KVM-HV) and [`s390_ccw`] (s390x, KVM on Z): the IBM machines
//!   on our own KVM layer, built through [`builder`], with [`machine`] (vCPU threads
//!   and the event thread), and [`vcpu_control`] (pause, stop, the kick) shared with
//!   every architecture. Only the machine of
//!   the target architecture is exported as [`create`]; docs/arches.md says what runs
//!   where;
//! - [`seccomp`]: the per-thread seccomp filters of vCPU, event and device threads;
//!   [`poll_window`]: how long the device thread busy-polls before it blocks.
//!
//! Trust boundary: everything the guest writes (port/MMIO data, ACPI register values)
//! is handled on its vCPU thread by code that checks ranges and never panics on guest
//! input; guest-triggered logging is at `trace` level. A panic in a VM's threads is
//! caught and ends that VM with [`ExitReason::Crash`].

pub mod builder;
pub mod config;
pub mod console;
pub mod device_config;
pub mod exit;
pub mod handle;
pub mod lifecycle;
pub mod machine;
pub mod memory;
pub mod poll_window;
pub mod run;
pub mod seccomp;
pub mod stats;
pub mod terminal;
pub mod vcpu_control;
pub mod virtio_devices;

// The machine: how a VM is built on KVM and how its vCPUs' exits are served, per
// architecture. This is the one place in the VMM that names an architecture (as
// arch/src/lib.rs is for the guest platform); everything above it speaks
// `create(VmConfig) -> VmHandle`. x86_64 uses kvm-ioctls; the IBM machines use our own
// KVM layer (`arch::kvm`) through the shared lifecycle in [`machine`], and compile on
// every host so their logic is unit-tested natively.
#[cfg(target_arch = "x86_64")]
pub mod device_manager;
#[cfg(target_arch = "x86_64")]
pub mod msi;
pub mod pseries;
pub mod s390_ccw;
#[cfg(target_arch = "x86_64")]
pub mod vcpu;
#[cfg(target_arch = "x86_64")]
pub mod vm;

#[cfg(all(target_arch = "powerpc64", target_endian = "little"))]
pub use pseries::{create, VmError};
#[cfg(target_arch = "s390x")]
pub use s390_ccw::{create, VmError};
#[cfg(target_arch = "x86_64")]
pub use vm::{create, VmError};

/// Creates a VM that runs at once, as [`create`] followed by [`VmHandle::start`]. On
/// x86_64 the vCPUs run as soon as their threads exist, without a round trip through
/// the VM's event thread (`monovirt run`, the boot benchmark).
#[cfg(target_arch = "x86_64")]
pub use vm::create_running;

/// Creates a VM that runs at once, as [`create`] followed by [`VmHandle::start`].
#[cfg(not(target_arch = "x86_64"))]
pub fn create_running(config: VmConfig) -> Result<VmHandle, VmError> {
    let handle = create(config)?;
    // A VM that ended before it started has its reason in the handle already.
    let _ = handle.start();
    Ok(handle)
}

pub use config::VmConfig;
pub use console::{ConsoleConfig, ConsoleRing};
pub use exit::ExitReason;
pub use handle::{Command, CommandError, VmHandle};
