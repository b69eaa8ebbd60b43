//! Laying out the functions a run of a program executes together, so that they are
//! paged in through a few fault-around windows: the recorder (`run-order`, the binary)
//! writes the functions one run executed, in first-call order, as hash-free [`key`]s;
//! the [`link`] step maps those keys onto the symbols of a link's input [`objects`]
//! and hands lld a concrete symbol-ordering file. The monovirt package's build.rs
//! includes `key`, `objects` and `link` (std only) to run that step as its linker
//! wrapper (scripts/run-order.sh, link/run.order).

pub mod key;
pub mod link;
pub mod objects;
