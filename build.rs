//! Link settings for the `monovirt` binary (bin target only: tests, benches and the
//! library are linked as cargo's defaults say).
//!
//! - On glibc targets, packed relative relocations (DT_RELR, glibc 2.36+, binutils 2.38+
//!   or lld): the dynamic loader then reads a 4 KiB table instead of ~340 KiB of
//!   `R_X86_64_RELATIVE` entries at every start. The binary stays position-independent
//!   (ASLR keeps working), but `monovirt run` starts faster and maps less.
//! - On x86_64 Linux with lld (rustc's default linker there since 1.90), in optimised
//!   builds, the functions `monovirt run` executes are laid out first and together, in
//!   the order they first run (`link/run.order`, written by `scripts/run-order.sh`).
//!   Its ~600 functions are otherwise spread across 20 MB of text, and the kernel pages
//!   text in 64 KiB fault-around windows: ~90 windows (~6 MiB resident, one page fault
//!   each) shrink to a handful. The daemon's code is the same code, in another order.
//!
//! The order file holds hash-free keys (tools/run-order/src/key.rs) with each function's
//! size and recorded names: the names carry hashes that change with the profile, the
//! features and the dependency graph (`cargo build` and `cargo bench` differ: tokio's
//! test-util dev-dependency feature), so names alone fit only the builds they were
//! recorded in; a key (and size, for a generic function's instances) fits any. The keys are mapped onto the names
//! of each link by a linker wrapper, and this build script is that wrapper too: run as
//! `build-script-build link-order …` it reads the link's input objects' symbol tables,
//! writes the concrete ordering file into OUT_DIR (`run-path.order`, with
//! `run-path.summary` saying how many keys matched) and runs rustc's lld with it
//! (tools/run-order/src/link.rs). If anything in that fails, it links in the default
//! order and says why on stderr, which src/main.rs turns into a warning
//! (`linker_messages`).
//!
//! How the wrapper is put in lld's place: rustc links through `cc -fuse-ld=lld` with
//! its own lld first on gcc's program path (`-B`). gcc 12 has no `--ld-path`, and its
//! `-fuse-ld=NAME` runs the first `ld.NAME` on that path, so the bin's link arguments
//! name a linker rustc's directory lacks (`-fuse-ld=mold`) and put the wrapper, called
//! `ld.mold`, in a directory of its own (`-B`). A probe link (`-Wl,--version`) checks
//! that cc runs the wrapper and the wrapper runs lld before the bin gets the arguments;
//! otherwise the bin links as before, with a cargo warning.
//!
//! Issue 3's boot benchmark (benches/boot.rs) counts both: time to the first guest line
//! and peak RSS.

#[path = "tools/run-order/src/key.rs"]
mod key;
#[path = "tools/run-order/src/link.rs"]
mod link;
#[path = "tools/run-order/src/objects.rs"]
mod objects;

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The first argument that makes this program the linker wrapper.
const LINK_MODE: &str = "link-order";

fn main() {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() == Some(OsStr::new(LINK_MODE)) {
        let e = link::main(args);
        eprintln!("cannot run lld: {e}");
        std::process::exit(1);
    }

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    // No rerun-if-changed on the order file: the wrapper reads it at link time, and a
    // rerun of this script would rebuild the whole package. scripts/run-order.sh
    // touches src/main.rs instead, so the next build relinks the binary with it.
    let order = Path::new(env!("CARGO_MANIFEST_DIR")).join("link/run.order");
    // Optimised builds only: an unoptimised binary is for debugging, and its links
    // (the tests') stay as they were.
    let optimised = std::env::var("OPT_LEVEL").is_ok_and(|o| o != "0");
    if os == "linux"
        && env == "gnu"
        && arch == "x86_64"
        && optimised
        && order.is_file()
        && !other_linker()
    {
        match install_wrapper(&order) {
            Ok(dir) => {
                println!("cargo:rustc-link-arg-bins=-fuse-ld=mold");
                println!("cargo:rustc-link-arg-bins=-B{}/", dir.display());
            }
            Err(e) => println!(
                "cargo:warning=monovirt links without its run-path layout ({}): {e}",
                order.display()
            ),
        }
    }
}

/// Whether RUSTFLAGS or cargo's configuration move the link off rustc's self-contained
/// lld, which the wrapper runs (GNU ld and gold do not know `--symbol-ordering-file`).
fn other_linker() -> bool {
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    std::env::var_os("RUSTC_LINKER").is_some()
        || flags.split('\x1f').any(|f| {
            f.contains("linker-features=-lld")
                || f.contains("link-self-contained=-linker")
                || f.contains("-fuse-ld=")
                || f.contains("linker=")
        })
}

/// Writes the wrapper `ld.mold` (a script that runs this program in [`LINK_MODE`]) into
/// a directory of its own under OUT_DIR and checks cc runs it; that directory.
fn install_wrapper(order: &Path) -> Result<PathBuf, String> {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let host = std::env::var("HOST").map_err(|e| format!("HOST: {e}"))?;
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("rustc --print sysroot: {e}"))?;
    let sysroot = String::from_utf8(sysroot.stdout).map_err(|e| e.to_string())?;
    // Where rustc's `-B` points cc for its self-contained lld.
    let lld = Path::new(sysroot.trim()).join(format!("lib/rustlib/{host}/bin/gcc-ld/ld.lld"));
    if !lld.is_file() {
        return Err(format!("no lld at {}", lld.display()));
    }
    let me = std::env::current_exe().map_err(|e| format!("this program's path: {e}"))?;
    let dir = out_dir.join("linker");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let wrapper = dir.join("ld.mold");
    let script = format!(
        "#!/bin/sh\n# monovirt's build.rs: lld with link/run.order mapped onto this link's symbols.\nexec {} {LINK_MODE} {} {} {} \"$@\"\n",
        quote(&me)?,
        quote(order)?,
        quote(&lld)?,
        quote(&out_dir)?,
    );
    std::fs::write(&wrapper, script)
        .and_then(|()| std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)))
        .map_err(|e| format!("{}: {e}", wrapper.display()))?;

    // The probe: cc runs the wrapper for `-fuse-ld=mold`, the wrapper runs lld.
    let probe = Command::new("cc")
        .arg("-fuse-ld=mold")
        .arg(format!("-B{}/", dir.display()))
        .arg("-Wl,--version")
        .output()
        .map_err(|e| format!("cc: {e}"))?;
    let said = String::from_utf8_lossy(&probe.stdout);
    if !probe.status.success() || !said.contains("LLD") {
        return Err(format!(
            "cc does not run lld through {}: {}{}",
            wrapper.display(),
            said.trim(),
            String::from_utf8_lossy(&probe.stderr).trim()
        ));
    }
    Ok(dir)
}

/// `path` single-quoted for sh.
fn quote(path: &Path) -> Result<String, String> {
    let s = path
        .to_str()
        .ok_or_else(|| format!("{} is not UTF-8", path.display()))?;
    Ok(format!("'{}'", s.replace('\'', r"'\''")))
}
