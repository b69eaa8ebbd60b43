//! Link settings for the `monovirt` binary (bin target only: tests, benches and the
//! library are linked as cargo's defaults say).
//!
//! - On glibc targets, packed relative relocations (DT_RELR, glibc 2.36+, binutils 2.38+
//!   or lld): the dynamic loader then reads a 4 KiB table instead of ~340 KiB of
//!   `R_X86_64_RELATIVE` entries at every start. The binary stays position-independent
//!   (ASLR keeps working), but `monovirt run` starts faster and maps less.
//! - On x86_64 Linux with lld (rustc's default linker there since 1.90), the functions
//!   `monovirt run` executes are laid out first and together, in the order they first
//!   run (`link/run.order`, written by `scripts/run-order.sh`). Its ~600 functions are
//!   otherwise spread across 20 MB of text, and the kernel pages text in 64 KiB
//!   fault-around windows: ~90 windows (~6 MiB resident, one page fault each) shrink to
//!   a handful. Symbols the file names that a build does not have (another toolchain,
//!   changed code) are skipped silently; the layout then only degrades towards the
//!   default. The daemon's code is the same code, in another order.
//!
//! Issue 3's boot benchmark (benches/boot.rs) counts both: time to the first guest line
//! and peak RSS.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    // No rerun-if-changed on the order file: a new order only moves code, and a rerun of
    // this script would rebuild the whole package. scripts/run-order.sh touches
    // src/main.rs instead, so the next build relinks the binary with it.
    let order = Path::new(env!("CARGO_MANIFEST_DIR")).join("link/run.order");
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    if os == "linux" && env == "gnu" && arch == "x86_64" && order.is_file() && !other_linker() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}

/// Whether RUSTFLAGS move the link off rustc's self-contained lld (GNU ld and gold
/// do not know `--symbol-ordering-file`).
fn other_linker() -> bool {
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    flags.split('\x1f').any(|f| {
        f.contains("linker-features=-lld")
            || f.contains("link-self-contained=-linker")
            || f.contains("-fuse-ld=")
            || f.contains("linker=")
    })
}
