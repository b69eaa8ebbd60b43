//! Counters of one virtio-rng device.

use crate::virtio::active_queues::RingCounters;
use crate::virtio::Counter;

/// Counters of one entropy device. All are monotonic.
///
/// ```
/// use devices::virtio::rng::RngMetrics;
/// let m = RngMetrics::default();
/// m.bytes.add(32);
/// assert_eq!(m.bytes.get(), 32);
/// ```
#[derive(Debug, Default)]
pub struct RngMetrics {
    /// Queue notifications handled.
    pub queue_events: Counter,
    /// Requests filled.
    pub requests: Counter,
    /// Random bytes handed to the guest.
    pub bytes: Counter,
    /// Malformed requests returned empty.
    pub invalid_requests: Counter,
    /// Host entropy source failures.
    pub entropy_errors: Counter,
    /// Times the device flagged DEVICE_NEEDS_RESET.
    pub needs_reset: Counter,
    /// Interrupts sent to the driver.
    pub interrupts: Counter,
}

impl RngMetrics {
    /// Calls `f` with each counter's name and value.
    pub fn for_each(&self, mut f: impl FnMut(&'static str, u64)) {
        for (name, counter) in [
            ("queue_events", &self.queue_events),
            ("requests", &self.requests),
            ("bytes", &self.bytes),
            ("invalid_requests", &self.invalid_requests),
            ("entropy_errors", &self.entropy_errors),
            ("needs_reset", &self.needs_reset),
            ("interrupts", &self.interrupts),
        ] {
            f(name, counter.get());
        }
    }
}

impl RingCounters for RngMetrics {
    fn interrupts(&self) -> &Counter {
        &self.interrupts
    }

    fn needs_reset(&self) -> &Counter {
        &self.needs_reset
    }
}
