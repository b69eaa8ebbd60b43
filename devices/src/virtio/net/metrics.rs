//! Counters of one virtio-net device.

use crate::virtio::active_queues::RingCounters;
use crate::virtio::Counter;

/// Counters of one network device. All are monotonic.
///
/// ```
/// use devices::virtio::net::NetMetrics;
/// let m = NetMetrics::default();
/// m.tx_packets.inc();
/// let mut names = Vec::new();
/// m.for_each(|name, _| names.push(name));
/// assert!(names.contains(&"tx_packets"));
/// ```
#[derive(Debug, Default)]
pub struct NetMetrics {
    /// Frames delivered to the guest.
    pub rx_packets: Counter,
    /// Bytes delivered to the guest (headers included).
    pub rx_bytes: Counter,
    /// Times frames waited because the guest had no receive buffers.
    pub rx_no_buffers: Counter,
    /// Malformed receive chains returned empty.
    pub rx_invalid: Counter,
    /// Notifications (kicks) of the receive queue by the driver: it added buffers while
    /// the device had run out.
    pub rx_kicks: Counter,
    /// Backend read errors.
    pub rx_errors: Counter,
    /// Frames sent by the guest.
    pub tx_packets: Counter,
    /// Bytes sent by the guest (headers included).
    pub tx_bytes: Counter,
    /// Malformed transmit chains dropped.
    pub tx_invalid: Counter,
    /// Frames the backend refused (full, or a bad offload header).
    pub tx_errors: Counter,
    /// Notifications (kicks) of the transmit queue by the driver.
    pub tx_kicks: Counter,
    /// Times the device flagged DEVICE_NEEDS_RESET.
    pub needs_reset: Counter,
    /// Interrupts sent to the driver.
    pub interrupts: Counter,
}

impl NetMetrics {
    /// Calls `f` with each counter's name and value.
    pub fn for_each(&self, mut f: impl FnMut(&'static str, u64)) {
        for (name, counter) in [
            ("rx_packets", &self.rx_packets),
            ("rx_bytes", &self.rx_bytes),
            ("rx_no_buffers", &self.rx_no_buffers),
            ("rx_invalid", &self.rx_invalid),
            ("rx_kicks", &self.rx_kicks),
            ("rx_errors", &self.rx_errors),
            ("tx_packets", &self.tx_packets),
            ("tx_bytes", &self.tx_bytes),
            ("tx_invalid", &self.tx_invalid),
            ("tx_errors", &self.tx_errors),
            ("tx_kicks", &self.tx_kicks),
            ("needs_reset", &self.needs_reset),
            ("interrupts", &self.interrupts),
        ] {
            f(name, counter.get());
        }
    }
}

impl RingCounters for NetMetrics {
    fn interrupts(&self) -> &Counter {
        &self.interrupts
    }

    fn needs_reset(&self) -> &Counter {
        &self.needs_reset
    }
}
