//! Pause, resume and stop of a VM's vCPU threads: the state they check before each
//! `KVM_RUN` and park on while paused. Shared by every architecture's vCPU loop.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// What the vCPUs should be doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    /// Run the guest.
    Running,
    /// Park until resumed.
    Paused,
    /// Leave the loop.
    Stopping,
}

struct ControlState {
    state: RunState,
    parked: usize,
}

/// Shared run state of one VM's vCPUs.
pub struct VcpuControl {
    inner: Mutex<ControlState>,
    cv: Condvar,
}

impl Default for VcpuControl {
    fn default() -> Self {
        Self {
            inner: Mutex::new(ControlState {
                state: RunState::Running,
                parked: 0,
            }),
            cv: Condvar::new(),
        }
    }
}

impl VcpuControl {
    /// vCPUs that park as soon as they start, until set [`RunState::Running`]: threads
    /// created ahead of a VM's start.
    pub fn parked() -> Self {
        let control = Self::default();
        control
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .state = RunState::Paused;
        control
    }

    /// Sets the state; parked vCPUs re-check it.
    pub fn set(&self, state: RunState) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).state = state;
        self.cv.notify_all();
    }

    /// Blocks while paused; false once stopping.
    pub fn wait_runnable(&self) -> bool {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match g.state {
                RunState::Running => return true,
                RunState::Stopping => return false,
                RunState::Paused => {
                    g.parked += 1;
                    self.cv.notify_all();
                    g = self
                        .cv
                        .wait_while(g, |s| s.state == RunState::Paused)
                        .unwrap_or_else(|e| e.into_inner());
                    g.parked -= 1;
                }
            }
        }
    }

    /// Waits until `count` vCPUs are parked, up to `timeout`.
    pub fn wait_parked(&self, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        while g.parked < count {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = self
                .cv
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}
