//! For the freestanding build (target powerpc64le-unknown-linux-gnu): assembles
//! `src/entry.S` (entry, exception vectors, hypercall and RTAS trampolines; Rust's inline
//! assembly is not stable on PowerPC) with the cross compiler, and links the guest at its
//! physical load address with `link.ld`, without the C runtime. Host builds (`cargo test`
//! of the pure modules) link normally.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/entry.S");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target != "powerpc64le-unknown-linux-gnu" {
        return;
    }
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    let obj = out.join("entry.o");
    let cc = std::env::var("MONOVIRT_PPC64LE_CC")
        .unwrap_or_else(|_| "powerpc64le-linux-gnu-gcc".to_string());
    let status = Command::new(&cc)
        .args(["-c", "-mlittle-endian", "-m64", "-Wa,-mregnames"])
        .arg(dir.join("src/entry.S"))
        .arg("-o")
        .arg(&obj)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cc} (package gcc-powerpc64le-linux-gnu): {e}"));
    assert!(status.success(), "{cc} failed to assemble src/entry.S");
    println!("cargo:rustc-link-arg-bins={}", obj.display());
    println!(
        "cargo:rustc-link-arg-bins=-T{}",
        dir.join("link.ld").display()
    );
    for arg in [
        "-nostdlib",
        "-nostartfiles",
        "-static",
        "-no-pie",
        "-Wl,--build-id=none",
        "-Wl,-zmax-page-size=4096",
        "-Wl,-znorelro",
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
}
