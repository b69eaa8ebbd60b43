//! Rate limiting for log lines a guest can trigger at will (malformed requests, invalid
//! register writes): a burst per interval, then silence, then one line saying how many
//! were suppressed.

use std::time::{Duration, Instant};

/// Lines allowed per interval by [`LogLimiter::default`].
const DEFAULT_BURST: u32 = 10;
/// Interval of [`LogLimiter::default`].
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// A token window for one kind of log line.
///
/// ```
/// use std::time::Duration;
/// use devices::virtio::LogLimiter;
///
/// let mut limiter = LogLimiter::new(2, Duration::from_secs(3600));
/// assert_eq!(limiter.allow(), Some(0));
/// assert_eq!(limiter.allow(), Some(0));
/// assert_eq!(limiter.allow(), None); // suppressed and counted
/// ```
#[derive(Debug, Clone)]
pub struct LogLimiter {
    burst: u32,
    interval: Duration,
    window_start: Option<Instant>,
    emitted: u32,
    suppressed: u64,
}

impl Default for LogLimiter {
    fn default() -> Self {
        Self::new(DEFAULT_BURST, DEFAULT_INTERVAL)
    }
}

impl LogLimiter {
    /// At most `burst` lines per `interval`.
    pub fn new(burst: u32, interval: Duration) -> Self {
        LogLimiter {
            burst,
            interval,
            window_start: None,
            emitted: 0,
            suppressed: 0,
        }
    }

    /// Whether a line may be logged now; if so, returns how many were suppressed since the
    /// last one that was (to be included in the line).
    pub fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        let expired = self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= self.interval);
        if expired {
            self.window_start = Some(now);
            self.emitted = 0;
        }
        if self.emitted < self.burst {
            self.emitted += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suppressed_lines_are_counted_and_reported() {
        let mut l = LogLimiter::new(1, Duration::ZERO);
        // A zero interval opens a new window on every call.
        assert_eq!(l.allow(), Some(0));
        assert_eq!(l.allow(), Some(0));
        let mut l = LogLimiter::new(1, Duration::from_secs(3600));
        assert_eq!(l.allow(), Some(0));
        assert_eq!(l.allow(), None);
        assert_eq!(l.allow(), None);
        // Force the window to expire.
        l.interval = Duration::ZERO;
        assert_eq!(l.allow(), Some(2));
    }
}
