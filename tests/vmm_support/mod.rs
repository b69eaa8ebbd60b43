//! Shared by the `vmm_*` integration tests: the KVM gate and tiny hand-made guests.

#![allow(dead_code)]

pub mod netns;

use std::io::Write;
use std::path::PathBuf;

/// Whether /dev/kvm can run VMs. With MONOVIRT_REQUIRE_KVM=1 an unusable /dev/kvm
/// fails the test instead of skipping it.
pub fn kvm_available() -> bool {
    match kvm_ioctls::Kvm::new() {
        Ok(_) => true,
        Err(e) => {
            if std::env::var("MONOVIRT_REQUIRE_KVM").as_deref() == Ok("1") {
                panic!("MONOVIRT_REQUIRE_KVM=1 but /dev/kvm is unusable: {e}");
            }
            eprintln!("NOTICE: skipping: /dev/kvm is unusable ({e}); set MONOVIRT_REQUIRE_KVM=1 to fail instead");
            false
        }
    }
}

/// The host's 1-, 5- and 15-minute load averages, for a benchmark table's title: the
/// machines benchmarks run on are shared.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// For a benchmark harness: the run count to use (MONOVIRT_BENCH_RUNS, else `default`),
/// or None when the harness has nothing to do (`--list` discovery, or no usable /dev/kvm
/// without MONOVIRT_REQUIRE_KVM=1, which makes that an error instead).
pub fn bench_runs(name: &str, default: usize) -> anyhow::Result<Option<usize>> {
    if std::env::args().any(|a| a == "--list") {
        // `cargo bench -- --list` / nextest discovery: no sub-benchmarks.
        return Ok(None);
    }
    if kvm_ioctls::Kvm::new().is_err() {
        anyhow::ensure!(
            std::env::var("MONOVIRT_REQUIRE_KVM").as_deref() != Ok("1"),
            "MONOVIRT_REQUIRE_KVM=1 but /dev/kvm is unusable"
        );
        eprintln!("NOTICE: skipping the {name} benchmark: /dev/kvm is unusable");
        return Ok(None);
    }
    Ok(Some(
        std::env::var("MONOVIRT_BENCH_RUNS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
            .max(1),
    ))
}

/// An ELF64 executable with `code` loaded and entered at 1 MiB, with a Xen PVH note
/// naming the same entry if `pvh` (see `arch::x86_64::tiny_elf`). Not every test that
/// includes this module boots a hand-made guest.
#[allow(unused_imports)]
pub use arch::x86_64::tiny_elf::elf;

/// `mov dx, 0x3f8` then `mov al, c; out dx, al` per byte.
pub fn print(text: &[u8]) -> Vec<u8> {
    let mut code = vec![0x66, 0xba, 0xf8, 0x03];
    for c in text {
        code.extend_from_slice(&[0xb0, *c, 0xee]);
    }
    code
}

/// ACPI poweroff: SLP_TYP=5 | SLP_EN to PM1a_CNT (0x604), then `hlt`.
pub const POWEROFF: &[u8] = &[
    0x66, 0xba, 0x04, 0x06, 0x66, 0xb8, 0x00, 0x34, 0x66, 0xef, 0xf4,
];
/// i8042 reset: 0xFE to port 0x64, then `hlt`.
pub const I8042_RESET: &[u8] = &[0xb0, 0xfe, 0xe6, 0x64, 0xf4];
/// ACPI reset register: 1 to port 0x608, then `hlt`.
pub const ACPI_RESET: &[u8] = &[0x66, 0xba, 0x08, 0x06, 0xb0, 0x01, 0xee, 0xf4];
/// `ud2` with no IDT: #UD → #GP → #DF → triple fault.
pub const TRIPLE_FAULT: &[u8] = &[0x0f, 0x0b];
/// Prints '.' forever with a delay loop between dots.
pub const DOTS: &[u8] = &[
    0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
    0xb0, 0x2e, 0xee, // L: mov al, '.'; out dx, al
    0xb9, 0x00, 0x04, 0x00, 0x00, // mov ecx, 0x400
    0xff, 0xc9, 0x75, 0xfc, // d: dec ecx; jnz d
    0xeb, 0xf2, // jmp L
];
/// Enables the power button GPE, polls its status, then powers off.
pub const POWEROFF_ON_BUTTON: &[u8] = &[
    0x66, 0xba, 0x0e, 0x06, 0x66, 0xb8, 0x01, 0x00, 0x66, 0xef, // GPE0_EN = 1
    0x66, 0xba, 0x0c, 0x06, // mov dx, GPE0_STS
    0x66, 0xed, 0xa8, 0x01, 0x74, 0xfa, // L: in ax, dx; test al, 1; jz L
];

/// Writes `bytes` to a fresh file under the target temp dir; removed on drop.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(tag: &str, bytes: &[u8]) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "monovirt-vmm-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let mut f = std::fs::File::create(&path).expect("create temp file");
        f.write_all(bytes).expect("write temp file");
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
