#!/usr/bin/env bash
# Regenerates link/run.order, the functions `monovirt run` executes in the order they
# first run, which build.rs's link step lays out first and together in the `monovirt`
# binary: recorded by tools/run-order (one-shot breakpoints on every function, under
# ptrace) while the release binary boots the test guest through PVH and through the
# 64-bit boot protocol. Linked in that order, the run path's code is a few contiguous
# pages instead of ~90 scattered 64 KiB fault-around windows (benches/boot.rs: peak RSS,
# page faults, time to the first guest line).
#
# The file holds hash-free keys (tools/run-order/src/key.rs) with the recorded names,
# so it serves every build of the binary (cargo build, cargo bench, other features):
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
# Two builds of target/release/monovirt whose names differ: `cargo build`'s (what is
# installed) and `cargo bench`'s (what benches/boot.rs measures: tokio's test-util
# dev-dependency feature changes the crate hashes in the names). Each line keeps the
# names of both; any other build is matched by key and size.
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
# In first-call order (PVH's, then what only the 64-bit entry runs): one line per key
# and size, with every name it had.
{
    echo "# monovirt run's functions in first-call order: hash-free key, size and the names they"
    echo "# had in the recorded builds. Written by scripts/run-order.sh, mapped onto each link's"
    echo "# symbols by build.rs."
    cat "$work"/build-pvh "$work"/build-linux64 "$work"/bench-pvh "$work"/bench-linux64 | awk '
        { k = $1 " " $2; if (!(k in names)) { order[++n] = k; names[k] = "" }
          for (i = 3; i <= NF; i++) if (index(names[k] " ", " " $i " ") == 0) names[k] = names[k] " " $i }
        END { for (i = 1; i <= n; i++) print order[i] names[order[i]] }'
} >link/run.order
echo "link/run.order: $(grep -vc '^#' link/run.order) functions"
# build.rs does not watch the file (see there): relink with it on the next build.
touch src/main.rs
