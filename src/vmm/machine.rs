//! The runtime of a VM built on our own KVM layer (`arch::kvm`), shared by the IBM
//! machines ([`super::pseries`], [`super::s390_ccw`], built through [`super::builder`]):
//! one `vcpu-<vm>-<n>` thread per vCPU running `KVM_RUN` and handing each exit to the
//! machine's [`Platform`] (with [`other_exit`] for the exits every machine ends alike),
//! and the `vmm-<vm>` event thread that owns them, serves the [`VmHandle`]'s commands
//! through [`super::lifecycle`], feeds console input and tears everything down when the
//! VM ends.
//!
//! The x86_64 machine (`vm.rs`/`vcpu.rs` on kvm-ioctls) shares the command state machine
//! ([`super::lifecycle`]) and the pause, stop and `immediate_exit` kick
//! ([`super::vcpu_control`]), so both behave alike: the same commands in the same
//! states, no kick lost between the state check and `KVM_RUN`, panics caught per thread
//! and reported as a crash.

use std::any::Any;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use arch::kvm::{self, VcpuFd};
use tokio::sync::watch;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::console::{ConsoleConfig, ConsoleRing};
use super::exit::{panic_message, ExitReason, ExitSlot};
use super::handle::{CommandError, Request, VmHandle};
use super::lifecycle::{self, Commanded, Commands, Lifecycle};
use super::vcpu_control::{self, install_kick_handler, VcpuControl};

/// What a machine does with its vCPUs' exits and the host's requests.
pub trait Platform: Send + Sync + 'static {
    /// Serves one exit of vCPU `index` (`exit_reason` is `kvm_run.exit_reason`, the
    /// exit's data is in `vcpu`'s run page). `Some` ends the VM.
    fn handle_exit(&self, index: u32, vcpu: &mut VcpuFd, exit_reason: u32) -> Option<ExitReason>;

    /// The host pressed the power button. Returns whether the guest was told (a guest
    /// without a way to hear it is stopped when the grace period ends).
    fn power_button(&self) -> io::Result<bool>;

    /// Console input typed on the host.
    fn console_input(&self, bytes: &[u8]);
}

/// A crash of vCPU `index` because of `what`, as [`Platform::handle_exit`] returns it.
pub fn crash(index: u32, what: &str) -> Option<ExitReason> {
    Some(ExitReason::Crash {
        detail: format!("{what} on vCPU {index}"),
    })
}

/// The exits every machine serves alike, for [`Platform::handle_exit`] to hand on what
/// it does not serve itself: a system event (power off, reset; any other is a crash), a
/// failed VM entry, KVM's internal error, and an exit the machine does not expect. Each
/// ends the VM.
pub fn other_exit(index: u32, vcpu: &VcpuFd, exit_reason: u32) -> Option<ExitReason> {
    match exit_reason {
        kvm::EXIT_SYSTEM_EVENT => Some(match kvm::system_event_type(vcpu.exit_data()) {
            Some(kvm::SYSTEM_EVENT_SHUTDOWN) => ExitReason::Shutdown,
            Some(kvm::SYSTEM_EVENT_RESET) => ExitReason::Reboot,
            other => ExitReason::Crash {
                detail: format!("system event {other:?} on vCPU {index}"),
            },
        }),
        kvm::EXIT_FAIL_ENTRY => crash(index, "VM entry failed"),
        kvm::EXIT_INTERNAL_ERROR => crash(index, "KVM internal error"),
        other => crash(index, &format!("unexpected exit {other}")),
    }
}

/// Everything a built VM hands to [`start`].
pub struct MachineParts {
    /// VM name.
    pub name: Arc<str>,
    /// The vCPUs, boot vCPU first, with their registers set.
    pub vcpus: Vec<VcpuFd>,
    /// The machine's exit handling.
    pub platform: Arc<dyn Platform>,
    /// What must outlive the vCPUs (the VM fd, guest memory, device fds), dropped after
    /// every vCPU thread has been joined.
    pub keep_alive: Box<dyn Any + Send>,
    /// Where the console goes: input read from stdin or queued on a ring goes to
    /// [`Platform::console_input`].
    pub console: ConsoleConfig,
    /// Where the machine's own threads report how the VM ended.
    pub exit: Arc<ExitSlot>,
    /// Written when `exit` gets a reason from outside the vCPU threads.
    pub exit_evt: Arc<EventFd>,
    /// The VM's statistics (device metrics registered by the machine).
    pub stats: Arc<super::stats::VmStats>,
}

#[derive(Clone)]
struct VcpuContext {
    vm: Arc<str>,
    platform: Arc<dyn Platform>,
    control: Arc<VcpuControl>,
    exit: Arc<ExitSlot>,
    exit_evt: Arc<EventFd>,
}

fn spawn_vcpu(index: u32, mut fd: VcpuFd, ctx: VcpuContext) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("vcpu-{}-{index}", ctx.vm))
        .spawn(move || {
            let result = catch_unwind(AssertUnwindSafe(|| vcpu_loop(index, &mut fd, &ctx)));
            vcpu_control::clear_kick_target();
            if let Err(panic) = result {
                let msg = panic_message(panic.as_ref());
                tracing::error!(vm = %ctx.vm, vcpu = index, "vCPU thread panicked: {msg}");
                ctx.exit.report(ExitReason::Crash {
                    detail: format!("vCPU {index} thread panicked: {msg}"),
                });
            }
            // Whatever ended this loop ends the VM; the event thread tears down.
            let _ = ctx.exit_evt.write(1);
        })
}

fn vcpu_loop(index: u32, fd: &mut VcpuFd, ctx: &VcpuContext) {
    // SAFETY: the kvm_run page is mapped while `fd` lives; `spawn_vcpu` clears the
    // target before the fd goes.
    unsafe { vcpu_control::set_kick_target(fd.immediate_exit_ptr()) };
    while ctx.control.wait_runnable() {
        let outcome = match fd.run() {
            Ok(kvm::EXIT_INTR) => None,
            Ok(reason) => ctx.platform.handle_exit(index, fd, reason),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR) | Some(libc::EAGAIN)) => None,
            Err(e) => Some(ExitReason::Crash {
                detail: format!("KVM_RUN failed on vCPU {index}: {e}"),
            }),
        };
        fd.clear_immediate_exit();
        if let Some(reason) = outcome {
            ctx.exit.report(reason);
            return;
        }
    }
}

struct EventParts {
    name: Arc<str>,
    vcpus: Vec<VcpuFd>,
    threads: Vec<JoinHandle<()>>,
    platform: Arc<dyn Platform>,
    keep_alive: Option<Box<dyn Any + Send>>,
    console_input: bool,
    console_ring: Option<ConsoleRing>,
    control: Arc<VcpuControl>,
    exit: Arc<ExitSlot>,
    exit_tx: watch::Sender<Option<ExitReason>>,
    exit_evt: Arc<EventFd>,
    cmd_evt: Arc<EventFd>,
    rx: mpsc::Receiver<Request>,
}

/// Starts the event thread of a built VM; its vCPUs run on [`Command::Start`].
pub fn start(parts: MachineParts) -> io::Result<VmHandle> {
    install_kick_handler()?;
    let (tx, rx) = mpsc::channel();
    let cmd_evt = Arc::new(EventFd::new(EFD_NONBLOCK)?);
    let (exit_tx, exit_rx) = watch::channel(None);
    let name = parts.name.clone();
    let exit = parts.exit.clone();
    let stats = parts.stats.clone();
    let event = EventParts {
        name: parts.name,
        vcpus: parts.vcpus,
        threads: Vec::new(),
        platform: parts.platform,
        keep_alive: Some(parts.keep_alive),
        console_input: matches!(parts.console, ConsoleConfig::Stdio),
        console_ring: match parts.console {
            ConsoleConfig::Ring(ring) => Some(ring),
            _ => None,
        },
        control: Arc::new(VcpuControl::default()),
        exit: parts.exit,
        exit_tx,
        exit_evt: parts.exit_evt,
        cmd_evt: cmd_evt.clone(),
        rx,
    };
    std::thread::Builder::new()
        .name(format!("vmm-{name}"))
        .spawn(move || event_thread(event))?;
    Ok(VmHandle::new(name, tx, cmd_evt, exit, exit_rx, stats))
}

fn event_thread(mut parts: EventParts) {
    let (name, exit) = (parts.name.clone(), parts.exit.clone());
    lifecycle::run_guarded(&name, &exit, || event_loop(&mut parts));
    parts.control.stop(&mut parts.threads);
    parts.vcpus.clear();
    parts.keep_alive.take();
    lifecycle::finish(&parts.name, &parts.exit, &parts.exit_tx, &parts.rx);
}

const TOKEN_CMD: u64 = 0;
const TOKEN_EXIT: u64 = 1;
const TOKEN_STDIN: u64 = 2;
const TOKEN_RING: u64 = 3;

fn event_loop(parts: &mut EventParts) {
    let setup = || -> io::Result<Epoll> {
        let epoll = Epoll::new()?;
        for (fd, token) in [
            (parts.cmd_evt.as_raw_fd(), TOKEN_CMD),
            (parts.exit_evt.as_raw_fd(), TOKEN_EXIT),
        ] {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )?;
        }
        if let Some(evt) = parts.console_ring.as_ref().and_then(|r| r.input_event()) {
            let ring = EpollEvent::new(EventSet::IN, TOKEN_RING);
            epoll.ctl(ControlOperation::Add, evt.as_raw_fd(), ring)?;
        }
        if parts.console_input {
            let stdin = EpollEvent::new(EventSet::IN, TOKEN_STDIN);
            // stdin may be closed or not pollable (a regular file): then no input.
            if let Err(e) = epoll.ctl(ControlOperation::Add, libc::STDIN_FILENO, stdin) {
                tracing::debug!(vm = %parts.name, "console input disabled: {e}");
            }
        }
        Ok(epoll)
    };
    let epoll = match setup() {
        Ok(e) => e,
        Err(e) => {
            parts.exit.report(ExitReason::Crash {
                detail: format!("cannot set up the VM event loop: {e}"),
            });
            return;
        }
    };
    let mut commands = Commands::new(Lifecycle::Created, &parts.name, &parts.control, &parts.exit);
    let mut events = vec![EpollEvent::default(); 8];
    loop {
        let Some(n) = commands.wait(&epoll, commands.timeout_ms(), &mut events) else {
            return;
        };
        for ev in &events[..n] {
            match ev.data() {
                TOKEN_CMD if commands.drain(parts) => return,
                TOKEN_EXIT => return,
                TOKEN_STDIN => {
                    let mut buf = [0u8; 64];
                    match io::stdin().lock().read(&mut buf) {
                        Ok(0) | Err(_) => {
                            let _ = epoll.ctl(
                                ControlOperation::Delete,
                                libc::STDIN_FILENO,
                                EpollEvent::default(),
                            );
                        }
                        Ok(k) => parts.platform.console_input(&buf[..k]),
                    }
                }
                TOKEN_RING => {
                    if let Some(ring) = &parts.console_ring {
                        ring.drain_input(|bytes| {
                            parts.platform.console_input(bytes);
                            bytes.len()
                        });
                    }
                }
                _ => {}
            }
        }
    }
}

impl Commanded for EventParts {
    fn vcpu_threads(&self) -> &[JoinHandle<()>] {
        &self.threads
    }

    fn start_vcpus(&mut self) -> Result<(), CommandError> {
        let ctx = VcpuContext {
            vm: self.name.clone(),
            platform: self.platform.clone(),
            control: self.control.clone(),
            exit: self.exit.clone(),
            exit_evt: self.exit_evt.clone(),
        };
        for (i, fd) in self.vcpus.drain(..).enumerate() {
            match spawn_vcpu(i as u32, fd, ctx.clone()) {
                Ok(t) => self.threads.push(t),
                Err(e) => {
                    self.exit.report(ExitReason::Crash {
                        detail: format!("cannot start vCPU {i}: {e}"),
                    });
                    return Err(CommandError::Failed(e.to_string()));
                }
            }
        }
        Ok(())
    }

    fn power_button(&self) -> io::Result<bool> {
        self.platform.power_button()
    }

    fn command_queue(&self) -> (&EventFd, &mpsc::Receiver<Request>) {
        (&self.cmd_evt, &self.rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, Instant};

    /// A platform for a real-mode x86 test guest: port 0x10 writes count, port 0x11 ends
    /// the VM with Shutdown.
    struct PortPlatform {
        outs: AtomicU32,
    }

    impl Platform for PortPlatform {
        fn handle_exit(&self, _: u32, vcpu: &mut VcpuFd, exit_reason: u32) -> Option<ExitReason> {
            let io = vcpu.exit_data();
            let port = u16::from_ne_bytes([io[2], io[3]]);
            match (exit_reason, port) {
                (kvm::EXIT_IO, 0x10) => {
                    self.outs.fetch_add(1, Ordering::SeqCst);
                    None
                }
                (kvm::EXIT_IO, 0x11) => Some(ExitReason::Shutdown),
                (other, _) => Some(ExitReason::Crash {
                    detail: format!("exit {other}"),
                }),
            }
        }
        fn power_button(&self) -> io::Result<bool> {
            Ok(false)
        }
        fn console_input(&self, _: &[u8]) {}
    }

    /// Builds a VM on the host's KVM through arch::kvm whose reset vector runs `code`;
    /// `None` (or a panic with MONOVIRT_REQUIRE_KVM=1) without a usable /dev/kvm.
    fn guest(code: &[u8]) -> Option<(VmHandle, Arc<PortPlatform>)> {
        let kvm = match arch::kvm::Kvm::new() {
            Ok(k) => k,
            Err(e) => {
                if std::env::var("MONOVIRT_REQUIRE_KVM").as_deref() == Ok("1") {
                    panic!("MONOVIRT_REQUIRE_KVM=1 but /dev/kvm is unusable: {e}");
                }
                eprintln!("NOTICE: skipping: /dev/kvm is unusable ({e}); set MONOVIRT_REQUIRE_KVM=1 to fail instead");
                return None;
            }
        };
        let vm = kvm.create_vm(0).expect("VM");
        let mem = vm_memory::MmapRegion::<()>::new(0x1000).expect("memory");
        // SAFETY: the test's own 4 KiB mapping, kept alive with the VM in keep_alive.
        unsafe {
            std::ptr::copy_nonoverlapping(code.as_ptr(), mem.as_ptr().add(0xff0), code.len());
            vm.set_user_memory_region(arch::kvm::UserMemoryRegion {
                slot: 0,
                flags: 0,
                guest_phys_addr: 0xffff_f000,
                memory_size: 0x1000,
                userspace_addr: mem.as_ptr() as u64,
            })
            .expect("memory slot");
        }
        let vcpu = vm.create_vcpu(0).expect("vCPU");
        let platform = Arc::new(PortPlatform {
            outs: AtomicU32::new(0),
        });
        let handle = start(MachineParts {
            name: "machine-test".into(),
            vcpus: vec![vcpu],
            platform: platform.clone(),
            keep_alive: Box::new((vm, mem)),
            console: ConsoleConfig::Null,
            exit: Arc::new(ExitSlot::default()),
            exit_evt: Arc::new(EventFd::new(EFD_NONBLOCK).expect("eventfd")),
            stats: Arc::new(crate::vmm::stats::VmStats::new(None)),
        })
        .expect("machine");
        Some((handle, platform))
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn a_guest_runs_to_its_shutdown_through_the_platform() {
        // out 0x10,al; out 0x10,al; out 0x11,al
        let Some((vm, platform)) = guest(&[0xe6, 0x10, 0xe6, 0x10, 0xe6, 0x11]) else {
            return;
        };
        assert!(matches!(vm.pause(), Err(CommandError::InvalidState { .. })));
        vm.start().expect("start");
        assert_eq!(vm.wait(), ExitReason::Shutdown);
        assert_eq!(platform.outs.load(Ordering::SeqCst), 2);
        assert_eq!(vm.start(), Err(CommandError::Exited));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn a_spinning_guest_pauses_resumes_and_is_killed_by_the_kick() {
        // 1: out 0x10,al; jmp 1b -- never exits on its own.
        let Some((vm, platform)) = guest(&[0xe6, 0x10, 0xeb, 0xfc]) else {
            return;
        };
        vm.start().expect("start");
        vm.pause()
            .expect("pause parks the vCPU through the immediate_exit kick");
        let parked = platform.outs.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            platform.outs.load(Ordering::SeqCst),
            parked,
            "no exits while paused"
        );
        vm.resume().expect("resume");
        let deadline = Instant::now() + Duration::from_secs(30);
        while platform.outs.load(Ordering::SeqCst) == parked {
            assert!(Instant::now() < deadline, "the resumed guest never ran");
            std::thread::sleep(Duration::from_millis(1));
        }
        // Stop presses a power button this guest cannot hear: killed after the grace.
        vm.stop(Duration::from_millis(50)).expect("stop");
        assert_eq!(vm.wait(), ExitReason::Killed);
    }
}
