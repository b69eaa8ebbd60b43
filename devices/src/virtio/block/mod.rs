//! virtio-blk over a raw image file.
//!
//! Layout: [`device`] holds configuration, features and the lifecycle; [`request`] parses
//! and validates descriptor chains; [`event_handler`] runs on the device thread (queue
//! kicks, completions); [`worker_pool`] executes I/O off the device thread; [`disk`] is
//! the image backend; [`metrics`] the counters.

pub mod device;
pub mod disk;
pub mod event_handler;
pub mod metrics;
pub mod request;
pub mod worker_pool;

pub use device::{BlockConfig, BlockDevice, BlockError, DEFAULT_WORKERS, QUEUE_SIZE};
pub use disk::{DiskError, DiskFile};
pub use metrics::BlockMetrics;
pub use request::{Request, RequestError, RequestKind, SECTOR_SIZE};
pub use worker_pool::ThreadInit;
