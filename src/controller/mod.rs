//! Controllers: level-triggered reconcilers that read from in-memory caches fed by watches
//! and write through the API client.
//!
//! - [`clock`]: the current time as API timestamps;
//! - [`event`]: the Event recorder the roles share;
//! - [`reflector`]: list-then-watch into a [`reflector::Cache`], reporting each change;
//! - [`runtime`]: the reconcile loop (one reconcile per key at once, backoff, resync);
//! - [`vm`]: the VirtualMachine controller;
//! - [`node`]: the node lifecycle controller (lost nodes, and the VMIs on them).
#![forbid(unsafe_code)]
// Tests unwrap freely: a failure there is the test failing.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod clock;
pub mod event;
pub mod node;
pub mod reflector;
pub mod runtime;
pub mod vm;
