#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine: set-up, lints, both VMM test tiers,
# the API contract tests and stock kubectl. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

# A tier that cannot run fails instead of skipping.
export MONOVIRT_REQUIRE_KVM=1
# The stock kubectl (a version dispatcher on PATH) is a client in the tests.
export MONOVIRT_REQUIRE_KUBECTL=1
export CARGO_TERM_COLOR=never
# A clean checkout builds everything once: incremental caches would only add writes and disk.
export CARGO_INCREMENTAL=0

echo "== format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== test guest (x86_64-unknown-none)"
cargo build --release --locked --target x86_64-unknown-none \
    --manifest-path tests/guest/Cargo.toml
cargo fmt --manifest-path tests/guest/Cargo.toml --check
cargo clippy --release --locked --target x86_64-unknown-none \
    --manifest-path tests/guest/Cargo.toml -- -D warnings
# The guest's pure parts (boot-structure parsing, AML, RTC decoding) on the host.
cargo test --locked --manifest-path tests/guest/Cargo.toml

echo "== ppc64le test guest (freestanding, powerpc64le-unknown-linux-gnu)"
cargo build --release --locked --target powerpc64le-unknown-linux-gnu \
    --manifest-path tests/ppc64le-guest/Cargo.toml
cargo fmt --manifest-path tests/ppc64le-guest/Cargo.toml --check
cargo clippy --release --locked --target powerpc64le-unknown-linux-gnu \
    --manifest-path tests/ppc64le-guest/Cargo.toml -- -D warnings
# Its pure parts (RTAS argument blocks, command line, dates) on the host.
cargo test --locked --manifest-path tests/ppc64le-guest/Cargo.toml

echo "== guest artifacts (Debian cloud kernel, busybox)"
scripts/fetch-guest-artifacts.sh
# The nested ppc64le KVM tier's (tests/ppc64le_tier.rs): the Debian ppc64el kernel, busybox.
scripts/fetch-guest-artifacts.sh ppc64el

echo "== IBM Z (s390x) and IBM Power (ppc64le): the whole monovirt binary, cross-built"
# Before the tests: tests/ppc64le_tier.rs runs this ppc64le binary inside its L1.
# Debug builds: they compile and link everything a release build does, in less time.
# Each then runs under qemu-user, which takes `monovirt run` up to its first file access.
while read -r target runner sysroot; do
    cargo build --locked --target "$target" --bin monovirt </dev/null
    out=$("$runner" -L "$sysroot" "target/$target/debug/monovirt" \
        run --kernel /nonexistent/vmlinux </dev/null 2>&1 || true)
    case "$out" in
        *"Cannot read /nonexistent/vmlinux"*) ;;
        *) echo "monovirt ($target) did not reach its kernel: $out" >&2; exit 1 ;;
    esac
done <<'EOF_TARGETS'
s390x-unknown-linux-gnu qemu-s390x /usr/s390x-linux-gnu
powerpc64le-unknown-linux-gnu qemu-ppc64le /usr/powerpc64le-linux-gnu
EOF_TARGETS

echo "== tests"
cargo nextest run --workspace --locked --no-fail-fast
cargo test --workspace --locked --doc

echo "== IBM Z (s390x) and IBM Power (ppc64le) unit tests under qemu-user (docs/arches.md)"
# The runners in .cargo/config.toml run the cross-built tests under qemu-user.
# All of arch and devices on both. On s390x (big-endian) four tests are marked ignored:
# they count eventfd writes made through a clone, and Debian 12's qemu-user (7.2) does
# not byte-swap eventfd data on descriptors cloned with fcntl(F_DUPFD_CLOEXEC)
# (docs/arches.md).
for target in powerpc64le-unknown-linux-gnu s390x-unknown-linux-gnu; do
    cargo test --locked -p arch -p devices --target "$target"
done
