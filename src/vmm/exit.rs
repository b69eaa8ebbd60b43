//! Why a VM stopped, and the one-shot slot its threads report it through.

use std::fmt;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Why a VM ended. The caller decides what follows (restart on Reboot, per runStrategy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest powered off (ACPI S5).
    Shutdown,
    /// The guest asked for a reset (ACPI reset register, i8042, KVM system event).
    Reboot,
    /// The guest or its VMM threads failed (triple fault, KVM internal error, a panic).
    Crash {
        /// What happened, for the VMI's conditions and the log.
        detail: String,
    },
    /// Stopped by the host: a forced stop or a power-button stop whose grace ran out.
    Killed,
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shutdown => write!(f, "guest powered off"),
            Self::Reboot => write!(f, "guest requested a reboot"),
            Self::Crash { detail } => write!(f, "guest crashed: {detail}"),
            Self::Killed => write!(f, "VM was killed"),
        }
    }
}

/// The message a panic carried (`panic!` with a literal or a formatted string), for a
/// crash's detail.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Where the first exit reason is recorded. Later reports are ignored: the first cause
/// is the true one (a crash on one vCPU makes the others stop, not crash).
#[derive(Default)]
pub struct ExitSlot {
    reason: Mutex<Option<ExitReason>>,
    done: Condvar,
    finished: Mutex<bool>,
}

impl ExitSlot {
    /// Records `reason` unless one is already there; returns whether it was recorded.
    pub fn report(&self, reason: ExitReason) -> bool {
        let mut slot = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            return false;
        }
        *slot = Some(reason);
        true
    }

    /// The reason recorded so far.
    pub fn reason(&self) -> Option<ExitReason> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Marks the VM's threads as all gone; wakes waiters.
    pub fn finish(&self) {
        *self.finished.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.done.notify_all();
    }

    /// Blocks until the VM has finished (all threads joined) or `timeout` passes.
    pub fn wait(&self, timeout: Option<Duration>) -> Option<ExitReason> {
        let guard = self.finished.lock().unwrap_or_else(|e| e.into_inner());
        let guard = match timeout {
            Some(t) => {
                self.done
                    .wait_timeout_while(guard, t, |f| !*f)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
            None => self
                .done
                .wait_while(guard, |f| !*f)
                .unwrap_or_else(|e| e.into_inner()),
        };
        if *guard {
            Some(self.reason().unwrap_or(ExitReason::Killed))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn first_report_wins_and_wait_wakes() {
        let slot = Arc::new(ExitSlot::default());
        assert!(slot.report(ExitReason::Reboot));
        assert!(!slot.report(ExitReason::Shutdown));
        assert_eq!(slot.wait(Some(Duration::from_millis(1))), None);
        let s = slot.clone();
        let t = std::thread::spawn(move || s.wait(None));
        slot.finish();
        assert_eq!(t.join().expect("join"), Some(ExitReason::Reboot));
    }
}
