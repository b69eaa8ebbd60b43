//! The test guest (`tests/guest`) for integration tests: [`guest_elf`] builds it once per
//! test process and returns the ELF's path; [`Report`] parses the `key=value` lines it prints
//! on COM1 (the keys are documented in `tests/guest/README.md`); [`import_image`] puts it
//! into a node's image store for VMs that boot it by kernelBoot.
//!
//! ```ignore
//! let elf = common::guest::guest_elf()?;
//! // ... boot `elf` with "console=ttyS0 poweroff", capture the serial output ...
//! let report = common::guest::Report::parse(&output);
//! assert_eq!(report.get("boot"), Some("pvh"));
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{bail, ensure, Context, Result};

/// The guest's target triple.
pub const GUEST_TARGET: &str = "x86_64-unknown-none";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn build() -> Result<PathBuf> {
    let guest_dir = repo().join("tests/guest");
    let target_dir = guest_dir.join("target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            GUEST_TARGET,
            "--manifest-path",
        ])
        .arg(guest_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        // Flags meant for the host build must not leak into the freestanding one; cargo's own
        // build lock serialises concurrent test processes.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .status()
        .context("running cargo to build the test guest")?;
    ensure!(
        status.success(),
        "building the test guest failed ({status}); is the target installed (`rustup target add {GUEST_TARGET}`)?"
    );
    let elf = target_dir
        .join(GUEST_TARGET)
        .join("release/monovirt-test-guest");
    ensure!(
        elf.is_file(),
        "the test guest build did not produce {}",
        elf.display()
    );
    Ok(elf)
}

/// Builds the test guest (once per process; concurrent processes share cargo's lock) and
/// returns the path of its ELF.
pub fn guest_elf() -> Result<PathBuf> {
    static GUEST: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match GUEST.get_or_init(|| build().map_err(|e| format!("{e:#}"))) {
        Ok(path) => Ok(path.clone()),
        Err(e) => bail!("{e}"),
    }
}

/// The name the tests import the test guest under (a kernelBoot container image).
pub const IMAGE: &str = "monovirt/test-guest:1";

/// Imports the test guest (built once per process) into the image store of the node whose
/// data dir is `data_dir`, as [`IMAGE`] with the kernel at `/boot/vmlinux`.
pub fn import_image(data_dir: &Path) {
    let elf = guest_elf().expect("the test guest builds");
    let out = Command::new(env!("CARGO_BIN_EXE_monovirt"))
        .args(["image", "import", "--data-dir"])
        .arg(data_dir)
        .arg(IMAGE)
        .arg(&elf)
        .args(["--dest", "/boot/vmlinux"])
        .output()
        .expect("run monovirt image import");
    assert!(
        out.status.success(),
        "image import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `key=value` lines of one guest run, in order. Lines that are not `key=value` (firmware
/// banners, a kernel's log) are skipped.
#[derive(Clone, Debug, Default)]
pub struct Report {
    entries: Vec<(String, String)>,
}

impl Report {
    /// Parses serial output.
    pub fn parse(output: &str) -> Report {
        let entries = output
            .lines()
            .filter_map(|line| {
                let line = line.trim_end_matches('\r');
                let (key, value) = line.split_once('=')?;
                let valid = !key.is_empty()
                    && key.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    });
                valid.then(|| (key.to_owned(), value.to_owned()))
            })
            .collect();
        Report { entries }
    }

    /// The last value printed for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key`, or an error naming it.
    pub fn require(&self, key: &str) -> Result<&str> {
        self.get(key)
            .with_context(|| format!("the guest printed no `{key}=` line"))
    }

    /// `key`'s value as a number (`0x` hex or decimal).
    pub fn number(&self, key: &str) -> Result<u64> {
        parse_number(self.require(key)?).with_context(|| format!("`{key}` is not a number"))
    }

    /// All `(key, value)` pairs whose key starts with `prefix`, in order.
    pub fn with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.entries
            .iter()
            .filter(move |(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// How many times `key` was printed (a guest that reset prints `guest=` again).
    pub fn count(&self, key: &str) -> usize {
        self.entries.iter().filter(|(k, _)| k == key).count()
    }

    /// The e820 map: `(start, size, type)` per `e820.N` line.
    pub fn e820(&self) -> Result<Vec<(u64, u64, u32)>> {
        let n = self.number("e820.count")?;
        (0..n)
            .map(|i| {
                let v = self.require(&format!("e820.{i}"))?;
                let parts: Vec<&str> = v.split(',').collect();
                ensure!(parts.len() == 3, "e820.{i}={v} is not start,size,type");
                Ok((
                    parse_number(parts[0])?,
                    parse_number(parts[1])?,
                    parts[2].parse()?,
                ))
            })
            .collect()
    }
}

/// Parses `0x`-prefixed hexadecimal or decimal.
pub fn parse_number(s: &str) -> Result<u64> {
    let s = s.trim();
    let n = match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    n.with_context(|| format!("`{s}` is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines_and_skips_noise() {
        let r = Report::parse("SeaBIOS banner\r\n\nguest=x\r\ne820.count=1\ne820.0=0x0,0x9fc00,1\nBad Key=1\nsmp.cpu.1=1\nguest=y\n");
        assert_eq!(r.get("guest"), Some("y"));
        assert_eq!(r.count("guest"), 2);
        assert_eq!(r.get("Bad Key"), None);
        assert_eq!(r.e820().expect("valid map"), vec![(0, 0x9fc00, 1)]);
        assert_eq!(r.with_prefix("smp.cpu.").count(), 1);
        assert!(r.number("missing").is_err());
    }
}
