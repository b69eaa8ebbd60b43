//! The i8042 keyboard controller, reduced to what a VM needs: command 0xFE on port 0x64
//! pulses the CPU reset line (vm-superio's `I8042Device`). Registered at port 0x60 with
//! length 5 so that 0x60 is offset 0 and 0x64 offset 4.

use vm_superio::I8042Device;

use super::EventFdTrigger;
use crate::bus::BusDevice;

/// Ports 0x60..=0x64.
pub const I8042_PORT_LEN: u64 = 5;

/// i8042 with its reset line on an [`EventFdTrigger`].
pub struct I8042 {
    dev: I8042Device<EventFdTrigger>,
}

impl I8042 {
    /// A controller that signals `reset` when the guest asks for a CPU reset.
    pub fn new(reset: EventFdTrigger) -> Self {
        Self {
            dev: I8042Device::new(reset),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v = self.dev.read(offset as u8);
        data.fill(v);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let [v] = data {
            // If the reset eventfd cannot be written the VMM is already tearing down.
            let _ = self.dev.write(offset as u8, *v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    #[test]
    #[cfg_attr(
        target_arch = "s390x",
        ignore = "qemu-user 7.2 drops eventfd byte-swapping on fcntl(F_DUPFD_CLOEXEC) clones; run with --include-ignored on real s390x"
    )]
    fn reset_command_signals() {
        let t = EventFdTrigger::new(EventFd::new(EFD_NONBLOCK).expect("eventfd"));
        let evt = t.try_clone().expect("clone");
        let mut d = I8042::new(t);
        d.write(0, &[0xfe]);
        assert!(evt.event_fd().read().is_err(), "data port does not reset");
        d.write(4, &[0xfe]);
        assert_eq!(evt.event_fd().read().expect("reset"), 1);
    }
}
