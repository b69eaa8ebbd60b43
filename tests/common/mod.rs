//! Helpers shared by the integration tests (each test file includes this with `mod common;`).
//! Every test binary compiles all of them and uses only some.
#![allow(dead_code)]

pub mod api;
pub mod cli;
pub mod console;
pub mod guest;
pub mod guest_vm;
pub mod kinds;
pub mod netns;
pub mod random;
