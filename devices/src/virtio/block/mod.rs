//! virtio-blk over a raw image file.
//!
//! Layout: [`device`] holds configuration, features and the lifecycle; [`request`] parses
//! and validates descriptor chains; [`event_handler`] runs on the device thread (queue
//! kicks, completions, requests served from the page cache, busy polling); [`transfer`]
//! executes a request against the image, blocking or not; [`uring`] hands reads and
//! writes to the kernel through io_uring from the device thread; [`worker_pool`] runs the
//! blocking rest off the device thread; [`disk`] is the image backend, opened as its [`cache`] mode says;
//! [`metrics`] the counters.

pub mod cache;
pub mod device;
pub mod disk;
pub mod event_handler;
pub mod metrics;
pub mod request;
pub mod transfer;
pub mod uring;
pub mod worker_pool;

pub use cache::{CacheMode, CacheModeError};
pub use device::{BlockConfig, BlockDevice, BlockError, DEFAULT_WORKERS, QUEUE_SIZE};
pub use disk::{DirectAlign, DiskError, DiskFile};
pub use metrics::BlockMetrics;
pub use request::{Request, RequestError, RequestKind, SECTOR_SIZE};
pub use worker_pool::ThreadInit;
