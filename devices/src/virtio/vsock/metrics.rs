//! Counters of one virtio-vsock device.

use crate::virtio::active_queues::RingCounters;
use crate::virtio::Counter;

/// Counters of one vsock device. All are monotonic.
///
/// ```
/// use devices::virtio::vsock::VsockMetrics;
/// let m = VsockMetrics::default();
/// m.rx_packets.inc();
/// assert_eq!(m.rx_packets.get(), 1);
/// ```
#[derive(Debug, Default)]
pub struct VsockMetrics {
    /// Packets delivered to the guest.
    pub rx_packets: Counter,
    /// Payload bytes delivered to the guest.
    pub rx_bytes: Counter,
    /// Packets sent by the guest.
    pub tx_packets: Counter,
    /// Payload bytes sent by the guest.
    pub tx_bytes: Counter,
    /// Malformed chains dropped.
    pub invalid_packets: Counter,
    /// Times the device flagged DEVICE_NEEDS_RESET.
    pub needs_reset: Counter,
    /// Interrupts sent to the driver.
    pub interrupts: Counter,
}

impl VsockMetrics {
    /// Calls `f` with each counter's name and value.
    pub fn for_each(&self, mut f: impl FnMut(&'static str, u64)) {
        for (name, counter) in [
            ("rx_packets", &self.rx_packets),
            ("rx_bytes", &self.rx_bytes),
            ("tx_packets", &self.tx_packets),
            ("tx_bytes", &self.tx_bytes),
            ("invalid_packets", &self.invalid_packets),
            ("needs_reset", &self.needs_reset),
            ("interrupts", &self.interrupts),
        ] {
            f(name, counter.get());
        }
    }
}

impl RingCounters for VsockMetrics {
    fn interrupts(&self) -> &Counter {
        &self.interrupts
    }

    fn needs_reset(&self) -> &Counter {
        &self.needs_reset
    }
}
