//! Counters of one virtio-console device.

use crate::virtio::active_queues::RingCounters;
use crate::virtio::Counter;

/// Counters of one console. All are monotonic.
///
/// ```
/// use devices::virtio::console::ConsoleMetrics;
/// let m = ConsoleMetrics::default();
/// m.tx_bytes.add(5);
/// assert_eq!(m.tx_bytes.get(), 5);
/// ```
#[derive(Debug, Default)]
pub struct ConsoleMetrics {
    /// Bytes from the host to the guest.
    pub rx_bytes: Counter,
    /// Bytes from the guest to the host.
    pub tx_bytes: Counter,
    /// Guest output dropped because the host side did not keep up.
    pub tx_dropped_bytes: Counter,
    /// Malformed chains returned untouched.
    pub invalid_requests: Counter,
    /// Times the device flagged DEVICE_NEEDS_RESET.
    pub needs_reset: Counter,
    /// Interrupts sent to the driver.
    pub interrupts: Counter,
}

impl ConsoleMetrics {
    /// Calls `f` with each counter's name and value.
    pub fn for_each(&self, mut f: impl FnMut(&'static str, u64)) {
        for (name, counter) in [
            ("rx_bytes", &self.rx_bytes),
            ("tx_bytes", &self.tx_bytes),
            ("tx_dropped_bytes", &self.tx_dropped_bytes),
            ("invalid_requests", &self.invalid_requests),
            ("needs_reset", &self.needs_reset),
            ("interrupts", &self.interrupts),
        ] {
            f(name, counter.get());
        }
    }
}

impl RingCounters for ConsoleMetrics {
    fn interrupts(&self) -> &Counter {
        &self.interrupts
    }

    fn needs_reset(&self) -> &Counter {
        &self.needs_reset
    }
}
