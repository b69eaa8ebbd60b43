//! The lifecycle of a VM built on our own KVM layer (`arch::kvm`), shared by the IBM
//! machines ([`super::pseries`], [`super::s390_ccw`]): one `vcpu-<vm>-<n>` thread per
//! vCPU running `KVM_RUN` and handing each exit to the machine's [`Platform`], and the
//! `vmm-<vm>` event thread that owns them, serves [`Command`]s from the [`VmHandle`],
//! feeds console input and tears everything down when the VM ends.
//!
//! The behaviour matches the x86_64 machine (`vm.rs`/`vcpu.rs` on kvm-ioctls): the same
//! commands in the same states, kicks through `kvm_run.immediate_exit` set by a
//! real-time signal so none is lost between the state check and `KVM_RUN`, panics caught
//! per thread and reported as a crash.

use std::any::Any;
use std::cell::Cell;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arch::kvm::{self, VcpuFd};
use tokio::sync::watch;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use super::console::ConsoleRing;
use super::exit::{ExitReason, ExitSlot};
use super::handle::{Command, CommandError, Request, VmHandle};
use super::vcpu_control::{RunState, VcpuControl};

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
    /// Read stdin into [`Platform::console_input`].
    pub console_input: bool,
    /// A ring console whose queued input goes to [`Platform::console_input`].
    pub console_ring: Option<ConsoleRing>,
    /// Where the machine's own threads report how the VM ended.
    pub exit: Arc<ExitSlot>,
    /// Written when `exit` gets a reason from outside the vCPU threads.
    pub exit_evt: Arc<EventFd>,
    /// The VM's statistics (device metrics registered by the machine).
    pub stats: Arc<super::stats::VmStats>,
}

thread_local! {
    /// This thread's `kvm_run.immediate_exit` byte while it runs a vCPU.
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    IMMEDIATE_EXIT.with(|p| {
        let byte = p.get();
        if !byte.is_null() {
            // SAFETY: `byte` points into this thread's mapped kvm_run page, set by
            // `vcpu_loop` for exactly as long as the VcpuFd that owns the mapping lives on
            // this thread; a volatile byte store is async-signal-safe.
            unsafe { std::ptr::write_volatile(byte, 1) };
        }
    });
}

/// The kick signal: one above the x86_64 machine's, so both can live in one process.
fn kick_signal() -> libc::c_int {
    SIGRTMIN() + 1
}

fn install_kick_handler() -> io::Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = register_signal_handler(kick_signal(), kick_handler)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()));
    });
    result
}

fn kick(thread: &JoinHandle<()>) {
    // A thread that already ended cannot be signalled; nothing to kick then.
    let _ = thread.kill(kick_signal());
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
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
            IMMEDIATE_EXIT.with(|p| p.set(std::ptr::null_mut()));
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
    IMMEDIATE_EXIT.with(|p| p.set(fd.immediate_exit_ptr()));
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
        console_input: parts.console_input,
        console_ring: parts.console_ring,
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
    let result = catch_unwind(AssertUnwindSafe(|| event_loop(&mut parts)));
    if let Err(panic) = result {
        let msg = panic_message(panic.as_ref());
        tracing::error!(vm = %parts.name, "VM event thread panicked: {msg}");
        parts.exit.report(ExitReason::Crash {
            detail: format!("VM event thread panicked: {msg}"),
        });
    }
    parts.control.set(RunState::Stopping);
    for t in &parts.threads {
        kick(t);
    }
    for t in parts.threads.drain(..) {
        // A vCPU thread's panic is caught inside it; a join error cannot carry news.
        let _ = t.join();
    }
    parts.vcpus.clear();
    parts.keep_alive.take();
    while let Ok(req) = parts.rx.try_recv() {
        let _ = req.reply.send(Err(CommandError::Exited));
    }
    let reason = parts.exit.reason().unwrap_or(ExitReason::Killed);
    tracing::debug!(vm = %parts.name, %reason, "VM ended");
    parts.exit.finish();
    parts.exit_tx.send_replace(Some(reason));
}

const TOKEN_CMD: u64 = 0;
const TOKEN_EXIT: u64 = 1;
const TOKEN_STDIN: u64 = 2;
const TOKEN_RING: u64 = 3;
/// How long a pause waits for every vCPU to park.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    Created,
    Running,
    Paused,
}

impl Lifecycle {
    fn name(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Paused => "paused",
        }
    }
}

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
    let mut state = Lifecycle::Created;
    let mut stop_deadline: Option<Instant> = None;
    let mut events = vec![EpollEvent::default(); 8];
    loop {
        let timeout = stop_deadline.map_or(-1, |d| {
            d.saturating_duration_since(Instant::now())
                .as_millis()
                .min(i32::MAX as u128) as i32
        });
        let n = match epoll.wait(timeout, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                parts.exit.report(ExitReason::Crash {
                    detail: format!("VM event loop failed: {e}"),
                });
                return;
            }
        };
        if stop_deadline.is_some_and(|d| Instant::now() >= d) {
            tracing::info!(vm = %parts.name, "guest did not power off in time; stopping it");
            parts.exit.report(ExitReason::Killed);
            return;
        }
        for ev in &events[..n] {
            match ev.data() {
                TOKEN_CMD => {
                    let _ = parts.cmd_evt.read();
                    while let Ok(req) = parts.rx.try_recv() {
                        let (result, end) =
                            command(parts, &mut state, &mut stop_deadline, req.command);
                        let _ = req.reply.send(result);
                        if end {
                            return;
                        }
                    }
                }
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

/// Applies one command; returns its answer and whether the VM ends.
fn command(
    parts: &mut EventParts,
    state: &mut Lifecycle,
    stop_deadline: &mut Option<Instant>,
    cmd: Command,
) -> (Result<(), CommandError>, bool) {
    match (cmd, *state) {
        (Command::Start, Lifecycle::Created) => {
            let ctx = VcpuContext {
                vm: parts.name.clone(),
                platform: parts.platform.clone(),
                control: parts.control.clone(),
                exit: parts.exit.clone(),
                exit_evt: parts.exit_evt.clone(),
            };
            for (i, fd) in parts.vcpus.drain(..).enumerate() {
                match spawn_vcpu(i as u32, fd, ctx.clone()) {
                    Ok(t) => parts.threads.push(t),
                    Err(e) => {
                        parts.exit.report(ExitReason::Crash {
                            detail: format!("cannot start vCPU {i}: {e}"),
                        });
                        return (Err(CommandError::Failed(e.to_string())), true);
                    }
                }
            }
            *state = Lifecycle::Running;
            (Ok(()), false)
        }
        (Command::Pause, Lifecycle::Running) => {
            parts.control.set(RunState::Paused);
            for t in &parts.threads {
                kick(t);
            }
            if parts
                .control
                .wait_parked(parts.threads.len(), PAUSE_TIMEOUT)
            {
                *state = Lifecycle::Paused;
                (Ok(()), false)
            } else {
                parts.control.set(RunState::Running);
                (Err(CommandError::PauseTimeout), false)
            }
        }
        (Command::Resume, Lifecycle::Paused) => {
            parts.control.set(RunState::Running);
            *state = Lifecycle::Running;
            (Ok(()), false)
        }
        (Command::Stop { .. } | Command::Kill, Lifecycle::Created) | (Command::Kill, _) => {
            parts.exit.report(ExitReason::Killed);
            (Ok(()), true)
        }
        (Command::Stop { .. } | Command::PowerButton, _) => {
            if *state == Lifecycle::Paused {
                parts.control.set(RunState::Running);
                *state = Lifecycle::Running;
            }
            match parts.platform.power_button() {
                Ok(true) => {}
                Ok(false) => {
                    tracing::debug!(vm = %parts.name, "the guest cannot hear the power button")
                }
                Err(e) => return (Err(CommandError::Failed(e.to_string())), false),
            }
            if let Command::Stop { timeout } = cmd {
                let deadline = Instant::now() + timeout;
                *stop_deadline = Some(stop_deadline.map_or(deadline, |d| d.min(deadline)));
            }
            (Ok(()), false)
        }
        (_, s) => (
            Err(CommandError::InvalidState {
                command: cmd,
                state: s.name(),
            }),
            false,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

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
            console_input: false,
            console_ring: None,
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
