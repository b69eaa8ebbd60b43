//! [`EventFdTrigger`]: a vm-superio `Trigger` that signals an `EventFd`. The VMM registers
//! the fd as an irqfd (guest interrupt) or watches it (reset, poweroff).

use std::io;

use vm_superio::Trigger;
use vmm_sys_util::eventfd::EventFd;

/// Signals its `EventFd` on every trigger.
#[derive(Debug)]
pub struct EventFdTrigger(EventFd);

impl EventFdTrigger {
    /// Wraps `evt`.
    pub fn new(evt: EventFd) -> Self {
        Self(evt)
    }

    /// The event fd (to register as irqfd or watch).
    pub fn event_fd(&self) -> &EventFd {
        &self.0
    }

    /// A second trigger on the same eventfd.
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self(self.0.try_clone()?))
    }
}

impl Trigger for EventFdTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    #[test]
    #[cfg_attr(
        target_arch = "s390x",
        ignore = "qemu-user 7.2 drops eventfd byte-swapping on fcntl(F_DUPFD_CLOEXEC) clones; run with --include-ignored on real s390x"
    )]
    fn trigger_signals() {
        let t = EventFdTrigger::new(EventFd::new(EFD_NONBLOCK).expect("eventfd"));
        let c = t.try_clone().expect("clone");
        t.trigger().expect("trigger");
        c.trigger().expect("trigger");
        assert_eq!(t.event_fd().read().expect("read"), 2);
    }
}
