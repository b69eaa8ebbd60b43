//! Pause, resume and stop of a VM's vCPU threads: the state they check before each
//! `KVM_RUN` and park on while paused, and the kick that gets them out of `KVM_RUN`: a
//! real-time signal whose handler sets the thread's `kvm_run.immediate_exit`, so a kick
//! is never lost between the state check and entering the guest. Shared by every
//! architecture's vCPU loop (kvm-ioctls' on x86_64, `arch::kvm`'s on the IBM machines).

use std::cell::Cell;
use std::io;
use std::sync::{Condvar, Mutex, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

thread_local! {
    /// This thread's `kvm_run.immediate_exit` byte while it runs a vCPU (null otherwise).
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    IMMEDIATE_EXIT.with(|p| {
        let byte = p.get();
        if !byte.is_null() {
            // SAFETY: `byte` points into this thread's mapped kvm_run page, set by
            // `set_kick_target` for exactly as long as the vCPU fd that owns the mapping
            // lives on this thread; a volatile byte store is async-signal-safe.
            unsafe { std::ptr::write_volatile(byte, 1) };
        }
    });
}

/// The signal used to kick vCPU threads out of `KVM_RUN`.
pub fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

/// Installs the kick handler once per process.
pub fn install_kick_handler() -> io::Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = register_signal_handler(kick_signal(), kick_handler)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()));
    });
    result
}

/// Kicks a vCPU thread out of the guest.
pub fn kick(thread: &JoinHandle<()>) {
    // A thread that already ended cannot be signalled; nothing to kick then.
    let _ = thread.kill(kick_signal());
}

/// Makes a kick of this thread set `immediate_exit`, the byte of its vCPU's `kvm_run`.
///
/// # Safety
/// `immediate_exit` must stay mapped until [`clear_kick_target`] runs on this thread.
pub unsafe fn set_kick_target(immediate_exit: *mut u8) {
    IMMEDIATE_EXIT.with(|p| p.set(immediate_exit));
}

/// Forgets this thread's kick target (before its vCPU fd goes).
pub fn clear_kick_target() {
    IMMEDIATE_EXIT.with(|p| p.set(std::ptr::null_mut()));
}

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

    /// Pauses the vCPUs on `threads`: parks them, kicking each out of `KVM_RUN`. False
    /// (and running again) if not all parked within `timeout`.
    pub fn pause(&self, threads: &[JoinHandle<()>], timeout: Duration) -> bool {
        self.set(RunState::Paused);
        for t in threads {
            kick(t);
        }
        let parked = self.wait_parked(threads.len(), timeout);
        if !parked {
            self.set(RunState::Running);
        }
        parked
    }

    /// Stops the vCPU threads (parked or running) and joins them.
    pub fn stop(&self, threads: &mut Vec<JoinHandle<()>>) {
        self.set(RunState::Stopping);
        for t in threads.iter() {
            kick(t);
        }
        for t in threads.drain(..) {
            // A vCPU thread's panic is caught inside it; a join error cannot carry news.
            let _ = t.join();
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
