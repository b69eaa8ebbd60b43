//! What a VM's event thread `vmm-<vm>` does with the [`VmHandle`](super::VmHandle)'s
//! commands, for every machine (x86_64's `vm.rs`, the IBM machines' [`super::machine`]):
//! the [`Lifecycle`] state machine (which command is valid in which state, the stop
//! grace period), the panic guard around the event loop, and the end of the VM
//! (answering late commands, publishing the exit reason). A machine supplies what
//! differs through [`Commanded`]: how its vCPUs start and how it presses the power
//! button.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use vmm_sys_util::epoll::{Epoll, EpollEvent};
use vmm_sys_util::eventfd::EventFd;

use super::exit::{panic_message, ExitReason, ExitSlot};
use super::handle::{Command, CommandError, Request};
use super::vcpu_control::{RunState, VcpuControl};

/// How long a pause waits for every vCPU to park.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a VM is in its life, as the commands see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    /// Built; the vCPUs have not run.
    Created,
    /// The vCPUs run the guest.
    Running,
    /// The vCPUs are parked.
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

/// What the commands need of a machine beyond its vCPUs' [`VcpuControl`] and exit slot.
pub trait Commanded {
    /// The running vCPU threads (kicked on pause).
    fn vcpu_threads(&self) -> &[JoinHandle<()>];
    /// Lets the vCPUs run the guest for the first time (`Created` → `Running`). An error
    /// ends the VM; the machine has reported why to the VM's exit slot.
    fn start_vcpus(&mut self) -> Result<(), CommandError>;
    /// Presses the power button; whether the guest was told (one that cannot hear it is
    /// stopped when the stop's grace period ends).
    fn power_button(&self) -> io::Result<bool>;
    /// Where the [`VmHandle`](super::VmHandle)'s commands arrive: the eventfd it kicks
    /// and the queue.
    fn command_queue(&self) -> (&EventFd, &mpsc::Receiver<Request>);
}

/// The command state of one VM's event thread.
pub struct Commands {
    state: Lifecycle,
    /// When a stop's grace period ends.
    stop_deadline: Option<Instant>,
    /// The VM's name (logs).
    name: Arc<str>,
    /// Pause/stop state of its vCPUs.
    control: Arc<VcpuControl>,
    /// Where its exit reason goes.
    exit: Arc<ExitSlot>,
}

impl Commands {
    /// VM `name` in `state` (vCPUs parked in `Created`, or already `Running`), its vCPUs
    /// run by `control`, its exit reported to `exit`.
    pub fn new(
        state: Lifecycle,
        name: &Arc<str>,
        control: &Arc<VcpuControl>,
        exit: &Arc<ExitSlot>,
    ) -> Self {
        Self {
            state,
            stop_deadline: None,
            name: name.clone(),
            control: control.clone(),
            exit: exit.clone(),
        }
    }

    /// The event loop's epoll timeout in milliseconds: until a stop's grace period ends,
    /// or -1 (none).
    pub fn timeout_ms(&self) -> i32 {
        self.stop_deadline.map_or(-1, |d| {
            d.saturating_duration_since(Instant::now())
                .as_millis()
                .min(i32::MAX as u128) as i32
        })
    }

    /// Whether a stop's grace period has ended: the guest did not power off in time and
    /// the VM is killed (reported to its exit slot).
    pub fn overdue(&self) -> bool {
        if self.stop_deadline.is_none_or(|d| Instant::now() < d) {
            return false;
        }
        tracing::info!(vm = %self.name, "guest did not power off in time; stopping it");
        self.exit.report(ExitReason::Killed);
        true
    }

    /// Waits up to `timeout_ms` (-1: no limit) for the event loop's `events`; how many
    /// arrived (0 on a signal), or `None` when the loop must end: epoll failed (the VM
    /// crashed) or a stop's grace period is over (killed), both reported to the exit slot.
    pub fn wait(&self, epoll: &Epoll, timeout_ms: i32, events: &mut [EpollEvent]) -> Option<usize> {
        let n = match epoll.wait(timeout_ms, events) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => {
                self.exit.report(ExitReason::Crash {
                    detail: format!("VM event loop failed: {e}"),
                });
                return None;
            }
        };
        (!self.overdue()).then_some(n)
    }

    /// Answers every command the handle queued, in order; whether the VM ends.
    pub fn drain(&mut self, vm: &mut impl Commanded) -> bool {
        let _ = vm.command_queue().0.read();
        while let Ok(req) = vm.command_queue().1.try_recv() {
            let (result, end) = self.apply(vm, req.command);
            let _ = req.reply.send(result);
            if end {
                return true;
            }
        }
        false
    }

    /// Applies one command to `vm`; returns its answer and whether the VM ends.
    pub fn apply(
        &mut self,
        vm: &mut impl Commanded,
        cmd: Command,
    ) -> (Result<(), CommandError>, bool) {
        match (cmd, self.state) {
            (Command::Start, Lifecycle::Created) => match vm.start_vcpus() {
                Ok(()) => {
                    self.state = Lifecycle::Running;
                    (Ok(()), false)
                }
                Err(e) => (Err(e), true),
            },
            (Command::Pause, Lifecycle::Running) => {
                if self.control.pause(vm.vcpu_threads(), PAUSE_TIMEOUT) {
                    self.state = Lifecycle::Paused;
                    (Ok(()), false)
                } else {
                    (Err(CommandError::PauseTimeout), false)
                }
            }
            (Command::Resume, Lifecycle::Paused) => {
                self.control.set(RunState::Running);
                self.state = Lifecycle::Running;
                (Ok(()), false)
            }
            (Command::Stop { .. } | Command::Kill, Lifecycle::Created) | (Command::Kill, _) => {
                self.exit.report(ExitReason::Killed);
                (Ok(()), true)
            }
            (Command::Stop { .. } | Command::PowerButton, _) => {
                if self.state == Lifecycle::Paused {
                    self.control.set(RunState::Running);
                    self.state = Lifecycle::Running;
                }
                match vm.power_button() {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::debug!(vm = %self.name, "the guest cannot hear the power button yet")
                    }
                    Err(e) => return (Err(CommandError::Failed(e.to_string())), false),
                }
                if let Command::Stop { timeout } = cmd {
                    let deadline = Instant::now() + timeout;
                    self.stop_deadline =
                        Some(self.stop_deadline.map_or(deadline, |d| d.min(deadline)));
                }
                (Ok(()), false)
            }
            (_, state) => (
                Err(CommandError::InvalidState {
                    command: cmd,
                    state: state.name(),
                }),
                false,
            ),
        }
    }
}

/// Runs the event loop of VM `name`; a panic in it ends the VM as a crash (reported to
/// `exit`).
pub fn run_guarded(name: &str, exit: &ExitSlot, event_loop: impl FnOnce()) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(event_loop)) {
        let msg = panic_message(&*panic);
        tracing::error!(vm = %name, "VM event thread panicked: {msg}");
        exit.report(ExitReason::Crash {
            detail: format!("VM event thread panicked: {msg}"),
        });
    }
}

/// The end of a VM whose threads are gone: commands that raced with it get a clear
/// answer, and its exit reason (Killed if none was reported) is published.
pub fn finish(
    name: &str,
    exit: &ExitSlot,
    exit_tx: &watch::Sender<Option<ExitReason>>,
    rx: &mpsc::Receiver<Request>,
) {
    while let Ok(req) = rx.try_recv() {
        let _ = req.reply.send(Err(CommandError::Exited));
    }
    let reason = exit.reason().unwrap_or(ExitReason::Killed);
    tracing::debug!(vm = %name, %reason, "VM ended");
    exit.finish();
    exit_tx.send_replace(Some(reason));
}

// Tests may unwrap: a failed unwrap is a failed test.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A VM without vCPU threads: pauses park nobody, so only the state machine speaks.
    struct Fake {
        starts: u32,
        fail_start: bool,
        presses: Cell<u32>,
        hears: bool,
        cmd_evt: EventFd,
        rx: mpsc::Receiver<Request>,
    }

    /// A fake VM and the sending end of its command queue.
    fn fake_with_queue() -> (Fake, mpsc::Sender<Request>) {
        let (tx, rx) = mpsc::channel();
        let vm = Fake {
            starts: 0,
            fail_start: false,
            presses: Cell::new(0),
            hears: false,
            cmd_evt: EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap(),
            rx,
        };
        (vm, tx)
    }

    fn fake() -> Fake {
        fake_with_queue().0
    }

    impl Commanded for Fake {
        fn vcpu_threads(&self) -> &[JoinHandle<()>] {
            &[]
        }
        fn start_vcpus(&mut self) -> Result<(), CommandError> {
            self.starts += 1;
            if self.fail_start {
                return Err(CommandError::Failed("no threads".into()));
            }
            Ok(())
        }
        fn power_button(&self) -> io::Result<bool> {
            self.presses.set(self.presses.get() + 1);
            Ok(self.hears)
        }
        fn command_queue(&self) -> (&EventFd, &mpsc::Receiver<Request>) {
            (&self.cmd_evt, &self.rx)
        }
    }

    /// Commands for a VM in `state`, with its control and exit slot.
    fn commands(state: Lifecycle) -> (Commands, Arc<VcpuControl>, Arc<ExitSlot>) {
        let control = Arc::new(VcpuControl::default());
        let exit = Arc::new(ExitSlot::default());
        let c = Commands::new(state, &"fake".into(), &control, &exit);
        (c, control, exit)
    }

    fn invalid(r: (Result<(), CommandError>, bool), state: &str) {
        match r {
            (Err(CommandError::InvalidState { state: s, .. }), false) => assert_eq!(s, state),
            other => panic!("expected invalid in {state}, got {other:?}"),
        }
    }

    #[test]
    fn commands_follow_the_lifecycle() {
        let mut vm = fake();
        let (mut c, _, exit) = commands(Lifecycle::Created);
        invalid(c.apply(&mut vm, Command::Pause), "created");
        invalid(c.apply(&mut vm, Command::Resume), "created");
        assert_eq!(c.apply(&mut vm, Command::Start), (Ok(()), false));
        assert_eq!(vm.starts, 1);
        invalid(c.apply(&mut vm, Command::Start), "running");
        invalid(c.apply(&mut vm, Command::Resume), "running");
        assert_eq!(c.apply(&mut vm, Command::Pause), (Ok(()), false));
        invalid(c.apply(&mut vm, Command::Pause), "paused");
        assert_eq!(c.apply(&mut vm, Command::Resume), (Ok(()), false));
        // The power button does not end the VM; Kill does, as Killed.
        assert_eq!(c.apply(&mut vm, Command::PowerButton), (Ok(()), false));
        assert_eq!(vm.presses.get(), 1);
        assert_eq!(exit.reason(), None);
        assert_eq!(c.apply(&mut vm, Command::Kill), (Ok(()), true));
        assert_eq!(exit.reason(), Some(ExitReason::Killed));
    }

    #[test]
    fn a_vm_that_never_ran_stops_at_once_and_a_failed_start_ends_it() {
        let mut vm = fake();
        let stop = Command::Stop {
            timeout: Duration::from_secs(60),
        };
        let (mut c, _, exit) = commands(Lifecycle::Created);
        assert_eq!(c.apply(&mut vm, stop), (Ok(()), true));
        assert_eq!(vm.presses.get(), 0, "no guest to press the button for");
        assert_eq!(exit.reason(), Some(ExitReason::Killed));

        let mut vm = Fake {
            fail_start: true,
            ..fake()
        };
        let (mut c, _, _) = commands(Lifecycle::Created);
        assert!(matches!(
            c.apply(&mut vm, Command::Start),
            (Err(CommandError::Failed(_)), true)
        ));
    }

    #[test]
    fn stop_presses_the_button_resumes_and_keeps_the_earliest_deadline() {
        let mut vm = Fake {
            hears: true,
            ..fake()
        };
        let (mut c, control, exit) = commands(Lifecycle::Running);
        assert_eq!(c.timeout_ms(), -1, "no deadline: wait for events only");
        assert!(!c.overdue());
        assert_eq!(c.apply(&mut vm, Command::Pause), (Ok(()), false));
        let stop = |secs| Command::Stop {
            timeout: Duration::from_secs(secs),
        };
        assert_eq!(c.apply(&mut vm, stop(3600)), (Ok(()), false));
        assert_eq!(vm.presses.get(), 1);
        assert!(control.wait_runnable(), "a paused guest is resumed");
        invalid(c.apply(&mut vm, Command::Resume), "running");
        let first = c.timeout_ms();
        assert!(first > 0 && first <= 3_600_000);
        // A later, longer stop keeps the earlier deadline; a shorter one brings it in.
        c.apply(&mut vm, stop(7200)).0.unwrap();
        assert!(c.timeout_ms() <= first);
        c.apply(&mut vm, stop(0)).0.unwrap();
        assert_eq!(c.timeout_ms(), 0);
        assert!(c.overdue());
        assert_eq!(exit.reason(), Some(ExitReason::Killed));
    }

    #[test]
    fn drain_answers_queued_commands_in_order_until_one_ends_the_vm() {
        let (mut vm, tx) = fake_with_queue();
        let (mut c, _, exit) = commands(Lifecycle::Created);
        let send = |command| {
            let (reply, answer) = tokio::sync::oneshot::channel();
            tx.send(Request { command, reply }).unwrap();
            answer
        };
        vm.cmd_evt.write(1).unwrap();
        let (start, pause, resume) = (
            send(Command::Start),
            send(Command::Pause),
            send(Command::Start),
        );
        assert!(!c.drain(&mut vm), "nothing ended the VM");
        assert_eq!(
            vm.cmd_evt.read().map_err(|e| e.kind()),
            Err(io::ErrorKind::WouldBlock)
        );
        assert_eq!(start.blocking_recv().unwrap(), Ok(()));
        assert_eq!(pause.blocking_recv().unwrap(), Ok(()));
        assert!(matches!(
            resume.blocking_recv().unwrap(),
            Err(CommandError::InvalidState {
                state: "paused",
                ..
            })
        ));
        // Kill ends it: what was queued after it stays for `finish` to answer.
        let (kill, late) = (send(Command::Kill), send(Command::Resume));
        assert!(c.drain(&mut vm));
        assert_eq!(kill.blocking_recv().unwrap(), Ok(()));
        assert_eq!(exit.reason(), Some(ExitReason::Killed));
        assert!(vm.rx.try_recv().is_ok_and(|r| r.command == Command::Resume));
        drop(late);
    }

    #[test]
    fn wait_ends_the_loop_when_the_stop_is_overdue() {
        let epoll = Epoll::new().unwrap();
        let mut events = vec![EpollEvent::default(); 4];
        let mut vm = Fake {
            hears: true,
            ..fake()
        };
        let (mut c, _, exit) = commands(Lifecycle::Running);
        assert_eq!(c.wait(&epoll, 0, &mut events), Some(0));
        c.apply(
            &mut vm,
            Command::Stop {
                timeout: Duration::ZERO,
            },
        )
        .0
        .unwrap();
        assert_eq!(c.wait(&epoll, c.timeout_ms(), &mut events), None);
        assert_eq!(exit.reason(), Some(ExitReason::Killed));
    }

    #[test]
    fn a_panicking_event_loop_is_a_crash_and_late_commands_are_answered() {
        let exit = ExitSlot::default();
        run_guarded("fake", &exit, || panic!("boom"));
        assert!(
            matches!(exit.reason(), Some(ExitReason::Crash { detail }) if detail.contains("boom"))
        );

        let (tx, rx) = mpsc::channel();
        let (reply, answer) = tokio::sync::oneshot::channel();
        tx.send(Request {
            command: Command::Start,
            reply,
        })
        .unwrap();
        let (exit_tx, exit_rx) = watch::channel(None);
        finish("fake", &exit, &exit_tx, &rx);
        assert_eq!(answer.blocking_recv().unwrap(), Err(CommandError::Exited));
        assert!(matches!(*exit_rx.borrow(), Some(ExitReason::Crash { .. })));
    }
}
