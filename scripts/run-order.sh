#!/usr/bin/env bash
# Regenerates link/run.order, the symbol-ordering file build.rs hands to lld for the
# `monovirt` binary: the functions `monovirt run` executes, in the order they first run,
# recorded by tools/run-order (one-shot breakpoints on every function, under ptrace)
# while the release binary boots the test guest through PVH and through the 64-bit boot
# protocol. Linked in that order, the run path's code is a few contiguous pages instead
# of ~90 scattered 64 KiB fault-around windows (benches/boot.rs: peak RSS, page faults,
# time to the first guest line).
#
# Run it after changing the run path, the dependencies or the toolchain (symbol names
# carry crate hashes): a stale file only makes the layout degrade towards the default.
# Needs /dev/kvm, nm (binutils) and the x86_64-unknown-none target for the test guest.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p run-order
cargo build --release --locked --target x86_64-unknown-none \
    --manifest-path tests/guest/Cargo.toml
guest=tests/guest/target/x86_64-unknown-none/release/monovirt-test-guest

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Two builds of target/release/monovirt with different symbol names: `cargo build`'s
# (what is installed) and `cargo bench`'s (what benches/boot.rs measures: the
# dev-dependencies' features, tokio's test-util, change the crate hashes in the names).
# The file lists both; each link uses the names it has and skips the others.
record() {
    for boot in pvh linux64; do
        target/release/run-order "$work/$1-$boot" -- target/release/monovirt run \
            --kernel "$guest" --cmdline "console=ttyS0 poweroff" --boot "$boot" \
            --cpus 2 --memory 256 >/dev/null
    done
}
cargo build --release --locked -p monovirt --bin monovirt
record build
cargo bench --locked --bench boot --no-run
record bench
# PVH's order first, then what only the 64-bit entry runs; each symbol once.
cat "$work"/build-pvh "$work"/build-linux64 "$work"/bench-pvh "$work"/bench-linux64 |
    awk '!seen[$0]++' >link/run.order
echo "link/run.order: $(wc -l <link/run.order) symbols"
# build.rs does not watch the file (see there): relink with it on the next build.
touch src/main.rs
