//! A domain (libvirt's word, virt-handler's too): one VMI's VM in this process, with its
//! console ring, what was prepared for it, and what happened to it (paused, asked to
//! stop, exited). [`Domains`] is the agent's table of them, by VMI key.

use super::prepare::Prepared;
use crate::vmm::{ConsoleRing, ExitReason, VmConfig, VmHandle};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The console ring's size: what a console client gets on connect.
pub const CONSOLE_RING_BYTES: usize = 64 << 10;

/// What happened to a domain so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainState {
    /// Paused by the user (the Paused condition).
    pub paused: bool,
    /// A graceful stop was requested (deletion, or the agent shutting down).
    pub stopping: bool,
    /// How the VM ended, once it has (all its threads gone).
    pub exit: Option<ExitReason>,
    /// In-place reboots the guest asked for.
    pub reboots: u32,
}

/// One VMI's VM.
pub struct Domain {
    /// `namespace/name` of the VMI.
    pub key: String,
    /// The VMI's uid: a VMI of the same name with another uid is another domain.
    pub uid: String,
    /// COM1, kept across in-place reboots.
    pub console: ConsoleRing,
    /// What [`super::prepare::prepare`] set up.
    pub prepared: Prepared,
    /// The VM's configuration (for in-place reboots).
    pub config: VmConfig,
    /// terminationGracePeriodSeconds.
    pub grace: Duration,
    handle: Mutex<VmHandle>,
    state: Mutex<DomainState>,
}

impl std::fmt::Debug for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Domain")
            .field("key", &self.key)
            .field("uid", &self.uid)
            .field("state", &*self.state())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a panic mid-update of plain fields; the values are still whole.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Domain {
    /// A domain for a created (not yet started) VM.
    pub fn new(
        key: String,
        uid: String,
        console: ConsoleRing,
        prepared: Prepared,
        config: VmConfig,
        grace: Duration,
        handle: VmHandle,
    ) -> Self {
        Self {
            key,
            uid,
            console,
            prepared,
            config,
            grace,
            handle: Mutex::new(handle),
            state: Mutex::new(DomainState::default()),
        }
    }

    /// The current VM handle (a reboot replaces it).
    pub fn handle(&self) -> VmHandle {
        lock(&self.handle).clone()
    }

    /// Replaces the VM after an in-place reboot.
    pub fn replace_handle(&self, handle: VmHandle) {
        *lock(&self.handle) = handle;
        lock(&self.state).reboots += 1;
    }

    /// A snapshot of the state.
    pub fn state(&self) -> MutexGuard<'_, DomainState> {
        lock(&self.state)
    }
}

/// The agent's domains by VMI key.
#[derive(Debug, Clone, Default)]
pub struct Domains {
    inner: Arc<Mutex<BTreeMap<String, Arc<Domain>>>>,
}

impl Domains {
    /// The domain of VMI `key`.
    pub fn get(&self, key: &str) -> Option<Arc<Domain>> {
        lock(&self.inner).get(key).cloned()
    }

    /// Adds `d` (replacing nothing: the caller removed any older domain of the key).
    pub fn insert(&self, d: Arc<Domain>) {
        lock(&self.inner).insert(d.key.clone(), d);
    }

    /// Removes the domain of `key` if it is the one with `uid`.
    pub fn remove(&self, key: &str, uid: &str) -> Option<Arc<Domain>> {
        let mut m = lock(&self.inner);
        if m.get(key).is_some_and(|d| d.uid == uid) {
            m.remove(key)
        } else {
            None
        }
    }

    /// Every domain.
    pub fn list(&self) -> Vec<Arc<Domain>> {
        lock(&self.inner).values().cloned().collect()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        lock(&self.inner).len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
