//! Link settings for the `monovirt` binary.
//!
//! On glibc targets the binary is linked with packed relative relocations (DT_RELR, glibc
//! 2.36+, binutils 2.38+): the dynamic loader then reads a 4 KiB table instead of ~340 KiB
//! of `R_X86_64_RELATIVE` entries at every start. The binary stays position-independent
//! (ASLR keeps working), but `monovirt run` starts faster and maps less (issue 3's boot
//! benchmark counts both).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
