//! The guest's own command-line words, among whatever else the command line carries
//! (`console=ttyS0` and the like are ignored). The last action word wins.
//!
//! | word | effect after `done=1` |
//! | --- | --- |
//! | `poweroff` (default) | ACPI S5 through the FADT |
//! | `reset` | the FADT reset register, else 0xFE to port 0x64 |
//! | `triplefault` | load an empty IDT and execute `int3` |
//! | `hang` | halt with interrupts off, forever |
//! | `tick` | print `tick=N` (and `tick.ns=` kvmclock time) about every 100 ms, forever |
//! | `wait` | wait for the ACPI power button (an SCI), then power off as `poweroff` does |
//! | `nosmp` | do not start the application processors |
//! | `net` | DHCP on the first virtio-net device, then one TCP connection (see [`crate::net`]) |
//! | `blkwrite` | write, flush and read back a pattern on every virtio-blk disk (see [`crate::blk`]) |

/// What the guest does once it has reported everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Poweroff,
    Reset,
    TripleFault,
    Hang,
    Tick,
    Wait,
}

impl Action {
    /// The value of the `action=` key.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Poweroff => "poweroff",
            Action::Reset => "reset",
            Action::TripleFault => "triplefault",
            Action::Hang => "hang",
            Action::Tick => "tick",
            Action::Wait => "wait",
        }
    }
}

/// Options parsed from the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    pub action: Action,
    /// Bring up the application processors (off with `nosmp`).
    pub smp: bool,
    /// Write a pattern to the virtio-blk disks (`blkwrite`).
    pub blk_write: bool,
    /// Bring up virtio-net with DHCP and serve one TCP connection (`net`).
    pub net: bool,
}

impl Options {
    /// Parses the words the guest understands out of `cmdline`.
    pub fn parse(cmdline: &[u8]) -> Options {
        let mut options = Options {
            action: Action::Poweroff,
            smp: true,
            blk_write: false,
            net: false,
        };
        for word in cmdline.split(|b| b.is_ascii_whitespace()) {
            match word {
                b"poweroff" => options.action = Action::Poweroff,
                b"reset" | b"reboot" => options.action = Action::Reset,
                b"triplefault" => options.action = Action::TripleFault,
                b"hang" => options.action = Action::Hang,
                b"tick" => options.action = Action::Tick,
                b"wait" => options.action = Action::Wait,
                b"nosmp" => options.smp = false,
                b"blkwrite" => options.blk_write = true,
                b"net" => options.net = true,
                _ => {}
            }
        }
        options
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_to_poweroff_with_smp() {
        assert_eq!(
            Options::parse(b"console=ttyS0"),
            Options {
                action: Action::Poweroff,
                smp: true,
                blk_write: false,
                net: false,
            }
        );
    }

    #[test]
    fn last_action_wins_and_other_words_are_ignored() {
        let o = Options::parse(b"console=ttyS0 reset  hang\tnosmp poweroff=1 blkwrite");
        assert_eq!(
            o,
            Options {
                action: Action::Hang,
                smp: false,
                blk_write: true,
                net: false,
            }
        );
        assert_eq!(Options::parse(b"triplefault").action, Action::TripleFault);
        assert_eq!(Options::parse(b"wait").action, Action::Wait);
    }
}
