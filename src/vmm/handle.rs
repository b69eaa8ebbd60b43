//! [`VmHandle`]: the cloneable way to drive a VM from any thread or task. Each command
//! goes over a channel with an `EventFd` kick to the VM's event thread and carries a
//! oneshot for its answer (the shape of Cloud Hypervisor's API and event-manager's
//! `RemoteEndpoint`). The exit reason is awaited blocking ([`VmHandle::wait`]) or async
//! ([`VmHandle::exited`]).

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use vmm_sys_util::eventfd::EventFd;

use super::exit::{ExitReason, ExitSlot};

/// A command to a VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Start the vCPUs of a created VM.
    Start,
    /// Park every vCPU.
    Pause,
    /// Unpark them.
    Resume,
    /// Press the power button; force the stop (reason Killed) after `timeout`.
    Stop {
        /// Grace period.
        timeout: Duration,
    },
    /// Press the power button only.
    PowerButton,
    /// Stop now (reason Killed).
    Kill,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// The VM has ended.
    #[error("VM has exited")]
    Exited,
    /// The command does not apply in the VM's state.
    #[error("Cannot {command:?} a VM that is {state}")]
    InvalidState {
        /// The command.
        command: Command,
        /// The state it found.
        state: &'static str,
    },
    /// vCPUs did not park in time.
    #[error("vCPUs did not pause in time")]
    PauseTimeout,
    /// Something failed in the VMM.
    #[error("{0}")]
    Failed(String),
}

/// A command with its reply channel.
pub struct Request {
    /// What to do.
    pub command: Command,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<(), CommandError>>,
}

/// Kills the VM when the last handle goes: a VM nobody can reach must not run on.
struct Owner {
    tx: mpsc::Sender<Request>,
    kick: Arc<EventFd>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        let (reply, _) = oneshot::channel();
        if self
            .tx
            .send(Request {
                command: Command::Kill,
                reply,
            })
            .is_ok()
        {
            // If the kick fails the event thread is already gone.
            let _ = self.kick.write(1);
        }
    }
}

/// Cloneable handle to one VM. Dropping the last clone kills the VM.
#[derive(Clone)]
pub struct VmHandle {
    name: Arc<str>,
    tx: mpsc::Sender<Request>,
    kick: Arc<EventFd>,
    exit: Arc<ExitSlot>,
    exit_rx: watch::Receiver<Option<ExitReason>>,
    stats: Arc<super::stats::VmStats>,
    _owner: Arc<Owner>,
}

impl VmHandle {
    pub(crate) fn new(
        name: Arc<str>,
        tx: mpsc::Sender<Request>,
        kick: Arc<EventFd>,
        exit: Arc<ExitSlot>,
        exit_rx: watch::Receiver<Option<ExitReason>>,
        stats: Arc<super::stats::VmStats>,
    ) -> Self {
        let owner = Arc::new(Owner {
            tx: tx.clone(),
            kick: kick.clone(),
        });
        Self {
            name,
            tx,
            kick,
            exit,
            exit_rx,
            stats,
            _owner: owner,
        }
    }

    /// The VM's read-only statistics (vCPU time, resident memory, device counters).
    pub fn stats(&self) -> Arc<super::stats::VmStats> {
        self.stats.clone()
    }

    /// The VM's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends `command`; the receiver yields the answer (await it, or `blocking_recv`
    /// outside async code).
    pub fn request(
        &self,
        command: Command,
    ) -> Result<oneshot::Receiver<Result<(), CommandError>>, CommandError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request { command, reply })
            .map_err(|_| CommandError::Exited)?;
        self.kick.write(1).map_err(|_| CommandError::Exited)?;
        Ok(rx)
    }

    /// Sends `command` and blocks for the answer. Not for use on an async runtime thread.
    pub fn call(&self, command: Command) -> Result<(), CommandError> {
        self.request(command)?
            .blocking_recv()
            .unwrap_or(Err(CommandError::Exited))
    }

    /// Sends `command` and awaits the answer.
    pub async fn call_async(&self, command: Command) -> Result<(), CommandError> {
        self.request(command)?
            .await
            .unwrap_or(Err(CommandError::Exited))
    }

    /// Starts the vCPUs.
    pub fn start(&self) -> Result<(), CommandError> {
        self.call(Command::Start)
    }

    /// Pauses all vCPUs (returns once they are parked).
    pub fn pause(&self) -> Result<(), CommandError> {
        self.call(Command::Pause)
    }

    /// Resumes all vCPUs.
    pub fn resume(&self) -> Result<(), CommandError> {
        self.call(Command::Resume)
    }

    /// Presses the power button and forces the stop after `timeout`.
    pub fn stop(&self, timeout: Duration) -> Result<(), CommandError> {
        self.call(Command::Stop { timeout })
    }

    /// Stops the VM now.
    pub fn kill(&self) -> Result<(), CommandError> {
        self.call(Command::Kill)
    }

    /// Blocks until the VM has ended and all its threads are gone.
    pub fn wait(&self) -> ExitReason {
        self.exit
            .wait(None)
            .expect("an untimed wait returns only once finished")
    }

    /// Like [`Self::wait`] with a limit; `None` if still running.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<ExitReason> {
        self.exit.wait(Some(timeout))
    }

    /// Awaits the end of the VM.
    pub async fn exited(&self) -> ExitReason {
        let mut rx = self.exit_rx.clone();
        let published = match rx.wait_for(|r| r.is_some()).await {
            Ok(r) => r.clone(),
            // The event thread is gone without publishing: it can only have been killed.
            Err(_) => None,
        };
        published
            .or_else(|| self.exit.reason())
            .unwrap_or(ExitReason::Killed)
    }
}
