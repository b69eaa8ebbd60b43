#!/usr/bin/env bash
# Regenerates link/run.order, the functions `monovirt run` executes in the order they
# first run, which build.rs's link step lays out first and together in the `monovirt`
# binary: recorded by tools/run-order (one-shot breakpoints on every function, under
# ptrace) while the release binary boots the test guest through PVH and through the
# 64-bit boot protocol. Linked in that order, the run path's code is a few contiguous
# pages instead of ~90 scattered 64 KiB fault-around windows (benches/boot.rs: peak RSS,
# page faults, time to the first guest line).
#
# The file holds hash-free keys, not symbol names (tools/run-order/src/key.rs), so one
# recording serves every build of the binary (cargo build, cargo bench, other features):
# the link maps the keys onto its own names. Run it after changing the run path or the
# toolchain; the link warns when fewer than 3/4 of the keys still name a function.
# Needs /dev/kvm, nm (binutils) and the x86_64-unknown-none target for the test guest.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p run-order
cargo build --release --locked --target x86_64-unknown-none \
    --manifest-path tests/guest/Cargo.toml
guest=tests/guest/target/x86_64-unknown-none/release/monovirt-test-guest

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release --locked -p monovirt --bin monovirt
for boot in pvh linux64; do
    target/release/run-order "$work/$boot" -- target/release/monovirt run \
        --kernel "$guest" --cmdline "console=ttyS0 poweroff" --boot "$boot" \
        --cpus 2 --memory 256 >/dev/null
done
# PVH's order first, then what only the 64-bit entry runs; each line once.
{
    echo "# monovirt run's functions in first-call order, as hash-free keys and sizes: written"
    echo "# by scripts/run-order.sh, mapped onto each link's symbols by build.rs."
    cat "$work"/pvh "$work"/linux64 | awk '!seen[$0]++'
} >link/run.order
echo "link/run.order: $(grep -vc '^#' link/run.order) functions"
# build.rs does not watch the file (see there): relink with it on the next build.
touch src/main.rs
