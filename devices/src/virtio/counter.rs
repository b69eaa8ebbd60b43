//! A monotonic event counter for device metrics: lock-free, shared between the device
//! thread that counts and whoever exports the value.

use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonic counter.
///
/// ```
/// use devices::virtio::Counter;
/// let c = Counter::default();
/// c.inc();
/// c.add(2);
/// assert_eq!(c.get(), 3);
/// ```
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}
