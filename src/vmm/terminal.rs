//! The user's terminal while a guest owns the console (`monovirt run` and
//! `monovirt console`): stdin is in raw mode (every key goes to the guest at once,
//! unechoed, as on a serial line), and the previous settings come back when the guard
//! drops, however the session ends.
//!
//! Two flavours, as the tools users know have them: [`Keys::SignalsStay`] is QEMU's
//! `-serial stdio` (input raw, output keeps the terminal's newline translation because
//! the guest writes bare `\n` too, Ctrl-C still raises SIGINT, which `monovirt run`
//! turns into an ACPI power-button press); [`Keys::AllToGuest`] is virtctl console's
//! (fully raw both ways, Ctrl-C goes to the guest, the client has its own escape key).

use std::io;
use std::os::fd::RawFd;

/// Which keys the guest gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// Ctrl-C, Ctrl-Z and Ctrl-\\ still signal this process; output processing stays.
    SignalsStay,
    /// Every byte goes to the guest; no input or output processing at all.
    AllToGuest,
}

/// Whether `fd` is a terminal.
pub fn is_terminal(fd: RawFd) -> bool {
    // SAFETY: isatty only inspects the descriptor number; any value is allowed.
    unsafe { libc::isatty(fd) == 1 }
}

/// Raw mode on a terminal; restores the saved settings when dropped.
pub struct RawMode {
    fd: RawFd,
    saved: libc::termios,
}

impl RawMode {
    /// Puts `fd` in raw mode if it is a terminal; `None` if it is not (a pipe, a file,
    /// /dev/null), which is left alone.
    pub fn enable(fd: RawFd, keys: Keys) -> io::Result<Option<RawMode>> {
        if !is_terminal(fd) {
            return Ok(None);
        }
        // SAFETY: all-zero is a valid termios, overwritten by tcgetattr.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `saved` is a valid out-pointer for the call.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let raw = raw_settings(&saved, keys);
        // SAFETY: `raw` is a valid termios derived from the terminal's own.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Some(RawMode { fd, saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: `saved` came from tcgetattr on this descriptor. TCSADRAIN lets the
        // guest's last output reach the terminal under the settings it was written with.
        unsafe { libc::tcsetattr(self.fd, libc::TCSADRAIN, &self.saved) };
    }
}

/// `saved` with raw input: no line editing, echo or input translation, 8-bit
/// characters, one byte at a time; output processing and signal keys stay unless `keys`
/// gives everything to the guest.
fn raw_settings(saved: &libc::termios, keys: Keys) -> libc::termios {
    let mut t = *saved;
    if keys == Keys::AllToGuest {
        // SAFETY: `t` is a valid termios; cfmakeraw only changes its flags.
        unsafe { libc::cfmakeraw(&mut t) };
        return t;
    }
    t.c_iflag &= !(libc::IGNBRK
        | libc::BRKINT
        | libc::PARMRK
        | libc::ISTRIP
        | libc::INLCR
        | libc::IGNCR
        | libc::ICRNL
        | libc::IXON);
    t.c_oflag |= libc::OPOST;
    t.c_lflag &= !(libc::ECHO | libc::ECHONL | libc::ICANON | libc::IEXTEN);
    t.c_cflag &= !(libc::CSIZE | libc::PARENB);
    t.c_cflag |= libc::CS8;
    t.c_cc[libc::VMIN] = 1;
    t.c_cc[libc::VTIME] = 0;
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_a_terminal_is_left_alone() {
        let (r, _w) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        use std::os::fd::AsRawFd;
        assert!(!is_terminal(r.as_raw_fd()));
        for keys in [Keys::SignalsStay, Keys::AllToGuest] {
            assert!(RawMode::enable(r.as_raw_fd(), keys)
                .expect("isatty")
                .is_none());
        }
    }

    #[test]
    fn a_pty_goes_raw_and_comes_back() {
        // SAFETY: plain libc calls on a pty pair this test owns.
        let (master, slave) = unsafe {
            let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
            assert!(master >= 0);
            assert_eq!(libc::grantpt(master), 0);
            assert_eq!(libc::unlockpt(master), 0);
            let name = libc::ptsname(master);
            assert!(!name.is_null());
            let slave = libc::open(name, libc::O_RDWR | libc::O_NOCTTY);
            assert!(slave >= 0);
            (master, slave)
        };
        let get = || {
            // SAFETY: all-zero termios, filled by tcgetattr on the open slave.
            let mut t: libc::termios = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            assert_eq!(unsafe { libc::tcgetattr(slave, &mut t) }, 0);
            t
        };
        let before = get();
        assert_ne!(before.c_lflag & libc::ICANON, 0, "a new pty is cooked");
        let raw = RawMode::enable(slave, Keys::SignalsStay)
            .expect("raw")
            .expect("a terminal");
        let during = get();
        assert_eq!(during.c_lflag & (libc::ICANON | libc::ECHO), 0);
        assert_ne!(during.c_lflag & libc::ISIG, 0, "Ctrl-C still signals");
        assert_ne!(during.c_oflag & libc::OPOST, 0);
        drop(raw);
        let after = get();
        assert_eq!(after.c_lflag, before.c_lflag);
        assert_eq!(after.c_iflag, before.c_iflag);

        let raw = RawMode::enable(slave, Keys::AllToGuest)
            .expect("raw")
            .expect("a terminal");
        let during = get();
        assert_eq!(during.c_lflag & (libc::ICANON | libc::ECHO | libc::ISIG), 0);
        assert_eq!(during.c_oflag & libc::OPOST, 0, "output untouched");
        drop(raw);
        let after = get();
        assert_eq!(after.c_lflag, before.c_lflag);
        assert_eq!(after.c_oflag, before.c_oflag);
        // SAFETY: closing the descriptors opened above.
        unsafe {
            libc::close(slave);
            libc::close(master);
        }
    }
}
