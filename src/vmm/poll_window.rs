//! How long the device thread busy-polls before it blocks: QEMU's adaptive iothread
//! polling (`poll-max-ns`, `poll-grow`, `poll-shrink`), per VM device thread.
//!
//! Waking a blocked thread costs a notification exit in the guest (the driver's kick) and
//! a scheduler wake-up on the host, each tens of microseconds where the guest itself runs
//! nested; a driver with a request in flight usually sends the next one within
//! microseconds of the completion. So after its work the device thread keeps looking at
//! the rings for a while, with the driver's notifications off, and only then blocks. The
//! window adapts to how long the thread actually waited for the driver: a wait the window
//! would have covered (under the maximum) grows it (from 4 µs, doubling), and
//! [`MISSES`] waits in a row longer than the maximum halve it (below 4 µs it closes), so
//! polling only runs where it pays and a VM that stops doing I/O costs no CPU after a few
//! more wake-ups. Gentler than QEMU's default (closing on the first long wait): on a busy
//! host, a guest vCPU that is preempted now and then, or a device thread that waits for a
//! CPU after its wake-up, makes single long waits that say nothing about the guest's pace,
//! and a window once closed only regrows through waits that include a wake-up.

use std::time::Duration;

/// The polling window of one device thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollWindow {
    current: Duration,
    max: Duration,
    /// Waits longer than the maximum since the last one that was not.
    misses: u32,
}

/// The first non-zero window (QEMU's).
const START: Duration = Duration::from_micros(4);
/// Waits in a row longer than the maximum that halve the window.
pub const MISSES: u32 = 4;

impl PollWindow {
    /// A window that starts closed and never exceeds `max` (zero: never poll).
    pub fn new(max: Duration) -> Self {
        PollWindow {
            current: Duration::ZERO,
            max,
            misses: 0,
        }
    }

    /// How long to poll before blocking now.
    pub fn current(&self) -> Duration {
        self.current
    }

    /// Adjusts the window after a wait for the driver that took `waited` (polling and
    /// blocking together).
    pub fn waited(&mut self, waited: Duration) {
        if waited > self.max {
            // Polling would have had to go on too long: once may be a preemption, several
            // times in a row is the guest's pace.
            self.misses += 1;
            if self.misses >= MISSES {
                self.misses = 0;
                self.current /= 2;
                if self.current < START {
                    self.current = Duration::ZERO;
                }
            }
            return;
        }
        self.misses = 0;
        if waited <= self.current {
            // Polling caught it: the window is right.
        } else if self.current < self.max {
            // A longer window would have caught it.
            self.current = if self.current.is_zero() {
                START
            } else {
                self.current * 2
            }
            .min(self.max);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_micros(32);

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn grows_while_longer_polling_would_catch_the_driver() {
        let mut w = PollWindow::new(MAX);
        assert_eq!(w.current(), Duration::ZERO);
        for want in [4, 8, 16, 32, 32] {
            w.waited(us(20));
            assert_eq!(w.current(), us(want));
        }
        // Caught within the window: unchanged.
        w.waited(us(3));
        assert_eq!(w.current(), MAX);
    }

    #[test]
    fn shrinks_when_the_driver_takes_longer_than_the_maximum() {
        let mut w = PollWindow::new(MAX);
        for _ in 0..4 {
            w.waited(us(20));
        }
        assert_eq!(w.current(), MAX);
        // Single waits over the maximum (a preempted guest or device thread) between
        // short ones change nothing.
        for _ in 0..3 * MISSES {
            w.waited(us(40));
            w.waited(us(20));
        }
        assert_eq!(w.current(), MAX);
        // Several in a row (the guest's pace, or a guest that stopped): halve, and close
        // below the first step; then stay closed.
        for want in [16, 8, 4, 0, 0] {
            for _ in 0..MISSES {
                w.waited(Duration::from_secs(1));
            }
            assert_eq!(w.current(), us(want));
        }
    }

    #[test]
    fn a_zero_maximum_never_polls() {
        let mut w = PollWindow::new(Duration::ZERO);
        for wait in [0, 1, 5, 100] {
            w.waited(us(wait));
            assert_eq!(w.current(), Duration::ZERO);
        }
    }
}
