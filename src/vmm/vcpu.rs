//! vCPU threads: one named `vcpu-<vm>-<n>` per vCPU, each a blocking `KVM_RUN` loop that
//! emulates port and MMIO accesses on the I/O buses in place. The event thread pauses
//! and stops them through [`VcpuControl`] plus a [`kick`] (`super::vcpu_control`).

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;

use devices::bus::Bus;
use kvm_bindings::{
    KVM_EXIT_INTERNAL_ERROR, KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET,
    KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::eventfd::EventFd;

use super::exit::{panic_message, ExitReason, ExitSlot};

pub use super::vcpu_control::{install_kick_handler, kick, RunState, VcpuControl};

/// What a vCPU thread needs besides its fd.
#[derive(Clone)]
pub struct VcpuContext {
    /// VM name (thread names, logs).
    pub vm: Arc<str>,
    /// Port I/O devices.
    pub pio: Arc<Bus>,
    /// MMIO devices.
    pub mmio: Arc<Bus>,
    /// Pause/stop control.
    pub control: Arc<VcpuControl>,
    /// Exit reason slot.
    pub exit: Arc<ExitSlot>,
    /// Wakes the event thread when this vCPU ends the VM.
    pub exit_evt: Arc<EventFd>,
    /// Where this thread registers itself for CPU-time statistics.
    pub stats: Arc<super::stats::VmStats>,
}

/// Spawns the thread for vCPU `index`.
pub fn spawn(index: u32, mut fd: VcpuFd, ctx: VcpuContext) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("vcpu-{}-{index}", ctx.vm))
        .spawn(move || {
            // The thread's own seccomp filter before anything the guest can reach.
            if let Err(e) = super::seccomp::apply(super::seccomp::ThreadKind::Vcpu) {
                tracing::error!(vm = %ctx.vm, vcpu = index, "{e}");
                ctx.exit.report(ExitReason::Crash {
                    detail: format!("vCPU {index}: {e}"),
                });
                let _ = ctx.exit_evt.write(1);
                return;
            }
            ctx.stats.vcpu_started(index);
            let result = catch_unwind(AssertUnwindSafe(|| run_loop(index, &mut fd, &ctx)));
            super::vcpu_control::clear_kick_target();
            if let Err(panic) = result {
                let msg = panic_message(&*panic);
                tracing::error!(vm = %ctx.vm, vcpu = index, "vCPU thread panicked: {msg}");
                ctx.exit.report(ExitReason::Crash {
                    detail: format!("vCPU {index} thread panicked: {msg}"),
                });
            }
            // Whatever ended this loop ends the VM; the event thread tears down.
            let _ = ctx.exit_evt.write(1);
        })
}

fn run_loop(index: u32, fd: &mut VcpuFd, ctx: &VcpuContext) {
    // SAFETY: the kvm_run page is mapped while `fd` lives; `spawn` clears the target
    // before the fd goes.
    unsafe { super::vcpu_control::set_kick_target(&mut fd.get_kvm_run().immediate_exit) };
    while ctx.control.wait_runnable() {
        let outcome = match fd.run() {
            Ok(exit) => handle_exit(index, exit, ctx),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => None,
            Err(e) => Some(ExitReason::Crash {
                detail: format!("KVM_RUN failed on vCPU {index}: {e}"),
            }),
        };
        fd.set_kvm_immediate_exit(0);
        let outcome = outcome.map(|reason| with_internal_error_detail(fd, reason));
        if let Some(reason) = outcome {
            ctx.exit.report(reason);
            return;
        }
    }
}

/// Adds KVM's suberror to an internal-error crash (1 = emulation failure, the usual one).
fn with_internal_error_detail(fd: &mut VcpuFd, reason: ExitReason) -> ExitReason {
    let run = fd.get_kvm_run();
    match reason {
        ExitReason::Crash { detail } if run.exit_reason == KVM_EXIT_INTERNAL_ERROR => {
            // SAFETY: KVM filled the `internal` member of the exit union for this exit reason.
            let suberror = unsafe { run.__bindgen_anon_1.internal.suberror };
            ExitReason::Crash {
                detail: format!("{detail} (suberror {suberror})"),
            }
        }
        other => other,
    }
}

fn handle_exit(index: u32, exit: VcpuExit, ctx: &VcpuContext) -> Option<ExitReason> {
    match exit {
        VcpuExit::IoIn(port, data) => {
            if !ctx.pio.read(u64::from(port), data) {
                tracing::trace!(vm = %ctx.vm, vcpu = index, port, "unhandled port read");
                data.fill(0xff);
            }
            None
        }
        VcpuExit::IoOut(port, data) => {
            if !ctx.pio.write(u64::from(port), data) {
                tracing::trace!(vm = %ctx.vm, vcpu = index, port, "unhandled port write");
            }
            None
        }
        VcpuExit::MmioRead(addr, data) => {
            if !ctx.mmio.read(addr, data) {
                tracing::trace!(vm = %ctx.vm, vcpu = index, addr, "unhandled MMIO read");
                data.fill(0xff);
            }
            None
        }
        VcpuExit::MmioWrite(addr, data) => {
            if !ctx.mmio.write(addr, data) {
                tracing::trace!(vm = %ctx.vm, vcpu = index, addr, "unhandled MMIO write");
            }
            None
        }
        VcpuExit::Intr => None,
        VcpuExit::Shutdown => Some(ExitReason::Crash {
            detail: format!("triple fault on vCPU {index}"),
        }),
        VcpuExit::SystemEvent(kind, _) => Some(match kind {
            KVM_SYSTEM_EVENT_SHUTDOWN => ExitReason::Shutdown,
            KVM_SYSTEM_EVENT_RESET => ExitReason::Reboot,
            KVM_SYSTEM_EVENT_CRASH => ExitReason::Crash {
                detail: format!("guest reported a crash on vCPU {index}"),
            },
            other => ExitReason::Crash {
                detail: format!("unknown system event {other} on vCPU {index}"),
            },
        }),
        VcpuExit::Hlt => Some(ExitReason::Crash {
            detail: format!("vCPU {index} halted outside the in-kernel irqchip"),
        }),
        VcpuExit::FailEntry(reason, cpu) => Some(ExitReason::Crash {
            detail: format!("VM entry failed on vCPU {index} (reason {reason:#x}, cpu {cpu})"),
        }),
        VcpuExit::InternalError => Some(ExitReason::Crash {
            detail: format!("KVM internal error on vCPU {index}"),
        }),
        other => Some(ExitReason::Crash {
            detail: format!("unexpected exit on vCPU {index}: {other:?}"),
        }),
    }
}
