//! The controlling terminal in raw mode for `console`: every key (Ctrl-C included) goes to
//! the guest byte by byte, and nothing is echoed locally. The saved mode comes back when
//! the guard drops, also on errors.

use std::os::fd::RawFd;

/// Whether `fd` is a terminal.
pub fn is_terminal(fd: RawFd) -> bool {
    // SAFETY: isatty only inspects the descriptor number; any value is allowed.
    unsafe { libc::isatty(fd) == 1 }
}

/// A terminal switched to raw mode; the original mode is restored on drop.
pub struct RawMode {
    fd: RawFd,
    saved: libc::termios,
}

impl RawMode {
    /// Switches `fd` to raw mode; `None` when it is not a terminal (a pipe or file).
    pub fn enter(fd: RawFd) -> std::io::Result<Option<Self>> {
        if !is_terminal(fd) {
            return Ok(None);
        }
        // SAFETY: termios is plain data (integers and arrays); all zeroes is a valid value
        // that tcgetattr overwrites.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `saved` is a valid, writable termios for the duration of the call.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut raw = saved;
        // SAFETY: `raw` is a valid termios; cfmakeraw only changes its flags.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: `raw` is a valid termios read by the call; `fd` is a terminal.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Some(Self { fd, saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: `saved` is the termios tcgetattr filled for this same `fd`.
        if unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) } != 0 {
            eprintln!(
                "monovirt: restoring the terminal mode failed: {} (run `reset`)",
                std::io::Error::last_os_error()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipe_is_no_terminal_and_stays_as_it_is() {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe() writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        assert!(!is_terminal(fds[0]));
        assert!(RawMode::enter(fds[0])
            .expect("no error for a pipe")
            .is_none());
        for fd in fds {
            // SAFETY: both descriptors were opened above and are closed once.
            unsafe { libc::close(fd) };
        }
    }
}
