//! Links the guest at its physical load address with `link.ld`, only for the freestanding
//! target (host `cargo test` of the pure modules links normally).

fn main() {
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target == "x86_64-unknown-none" {
        let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        println!("cargo:rustc-link-arg-bins=-T{dir}/link.ld");
        // The target defaults to static-pie; the boot protocols load an ET_EXEC at its
        // physical addresses, so link a fixed-address executable instead.
        println!("cargo:rustc-link-arg-bins=--no-pie");
        println!("cargo:rustc-link-arg-bins=-zmax-page-size=4096");
        println!("cargo:rustc-link-arg-bins=-znorelro");
    }
}
