//! Counters of one virtio-blk device, shared with whoever exports them (the API serves
//! them as Prometheus text).

use crate::virtio::active_queues::RingCounters;
use crate::virtio::Counter;

/// Counters of one block device. All are monotonic.
///
/// ```
/// use devices::virtio::block::BlockMetrics;
/// let m = BlockMetrics::default();
/// m.read_ops.inc();
/// let mut seen = Vec::new();
/// m.for_each(|name, value| seen.push((name, value)));
/// assert!(seen.contains(&("read_ops", 1)));
/// ```
#[derive(Debug, Default)]
pub struct BlockMetrics {
    /// Queue notifications handled.
    pub queue_events: Counter,
    /// Batches of chains the device thread found by busy polling, without a notification.
    pub polled_batches: Counter,
    /// Read requests completed.
    pub read_ops: Counter,
    /// Bytes read.
    pub read_bytes: Counter,
    /// Write requests completed.
    pub write_ops: Counter,
    /// Bytes written.
    pub write_bytes: Counter,
    /// Flush requests completed.
    pub flush_ops: Counter,
    /// Discard requests completed.
    pub discard_ops: Counter,
    /// Write-zeroes requests completed.
    pub write_zeroes_ops: Counter,
    /// GET_ID requests completed.
    pub get_id_ops: Counter,
    /// Reads and writes served on the device thread from the host page cache.
    pub nowait_hits: Counter,
    /// Reads and writes tried on the device thread that would have blocked and went to
    /// the I/O workers.
    pub nowait_misses: Counter,
    /// Reads and writes handed to the kernel through io_uring.
    pub uring_ops: Counter,
    /// io_uring transfers that failed or came up short and were redone by a worker.
    pub uring_retries: Counter,
    /// Requests that failed in the backend (status IOERR after I/O).
    pub io_errors: Counter,
    /// Malformed requests refused before any I/O.
    pub invalid_requests: Counter,
    /// Requests of an unsupported type.
    pub unsupported_requests: Counter,
    /// Writes refused because the disk is read-only.
    pub read_only_violations: Counter,
    /// Times the device flagged DEVICE_NEEDS_RESET.
    pub needs_reset: Counter,
    /// Interrupts sent to the driver.
    pub interrupts: Counter,
}

impl BlockMetrics {
    /// Calls `f` with each counter's name and value.
    pub fn for_each(&self, mut f: impl FnMut(&'static str, u64)) {
        for (name, counter) in [
            ("queue_events", &self.queue_events),
            ("polled_batches", &self.polled_batches),
            ("read_ops", &self.read_ops),
            ("read_bytes", &self.read_bytes),
            ("write_ops", &self.write_ops),
            ("write_bytes", &self.write_bytes),
            ("flush_ops", &self.flush_ops),
            ("discard_ops", &self.discard_ops),
            ("write_zeroes_ops", &self.write_zeroes_ops),
            ("get_id_ops", &self.get_id_ops),
            ("nowait_hits", &self.nowait_hits),
            ("nowait_misses", &self.nowait_misses),
            ("uring_ops", &self.uring_ops),
            ("uring_retries", &self.uring_retries),
            ("io_errors", &self.io_errors),
            ("invalid_requests", &self.invalid_requests),
            ("unsupported_requests", &self.unsupported_requests),
            ("read_only_violations", &self.read_only_violations),
            ("needs_reset", &self.needs_reset),
            ("interrupts", &self.interrupts),
        ] {
            f(name, counter.get());
        }
    }
}

impl RingCounters for BlockMetrics {
    fn interrupts(&self) -> &Counter {
        &self.interrupts
    }

    fn needs_reset(&self) -> &Counter {
        &self.needs_reset
    }
}
