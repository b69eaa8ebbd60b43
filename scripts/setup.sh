#!/usr/bin/env bash
# Installs everything monovirt's builds and tests need on a fresh Debian machine.
# Run as root. Idempotent: running it again changes nothing that is already in place.
#
# Add your packages to the list below (one per line, with what needs them).
set -euo pipefail

APT_PACKAGES=(
    # Real-Linux test tier (tests/linux_tier.rs, scripts/fetch-guest-artifacts.sh):
    # QEMU in TCG mode runs L1, busybox and cpio build the initramfs images, lz4 (Debian's
    # compression of its kernels) or xz/zstd/gzip decompress the kernel payload when
    # extracting vmlinux, binutils' readelf checks it,
    # kmod's depmod writes the unpacked kernel's modules.dep.
    qemu-system-x86
    qemu-utils
    busybox-static
    cpio
    lz4
    xz-utils
    zstd
    gzip
    binutils
    kmod
    # Control plane and networking tests.
    etcd-server
    iproute2
    # Network tests: ping into the test guest; curl drives the REST API in tests.
    iputils-ping
    curl
    nftables
    # Operations tests (tests/ops.rs): systemd-analyze verifies the unit file (systemd
    # provides it without running systemd); promtool checks /metrics (prometheus).
    systemd
    prometheus
    # IBM Z (s390x) and IBM Power (ppc64le) cross builds (docs/arches.md): the cross
    # linkers and C libraries .cargo/config.toml names, and qemu-user, the runner that
    # executes the cross-built unit tests.
    gcc-s390x-linux-gnu
    libc6-dev-s390x-cross
    gcc-powerpc64le-linux-gnu
    libc6-dev-ppc64el-cross
    qemu-user
    # The nested ppc64le KVM tier (tests/ppc64le_tier.rs): QEMU's pseries machine (TCG,
    # nested KVM-HV) runs L1; its kernel and busybox are ppc64el packages fetched by
    # scripts/fetch-guest-artifacts.sh (hence the ppc64el architecture below).
    qemu-system-ppc
)

RUST_TARGETS=(
    # The freestanding test guest (tests/guest).
    x86_64-unknown-none
    # IBM Z and IBM Power (docs/arches.md).
    s390x-unknown-linux-gnu
    powerpc64le-unknown-linux-gnu
)

RUST_COMPONENTS=(
    clippy
    rustfmt
)

if [[ $(id -u) -ne 0 ]]; then
    echo "setup.sh: run as root (it installs system packages)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# The ppc64le tier downloads (never installs) ppc64el packages: apt needs their index.
need_update=0
if ! dpkg --print-foreign-architectures | grep -qx ppc64el; then
    dpkg --add-architecture ppc64el
    need_update=1
fi
# Only what is missing is installed, so a machine that has everything never depends on
# the package mirrors being reachable (or in sync) to run the suite.
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
if ((${#missing[@]} || need_update)); then
    echo "setup.sh: installing ${missing[*]:-nothing (index update only)}"
    # A mirror caught mid-sync fails `update` for one index; retry, then go on with the
    # indexes we have: the install below fails loudly if a package really cannot be had.
    for attempt in 1 2 3; do
        apt-get -o DPkg::Lock::Timeout=600 update && break
        echo "setup.sh: apt-get update failed (attempt $attempt)" >&2
        sleep 5
    done
    if ((${#missing[@]})); then
        apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=600 "${missing[@]}"
    fi
fi

if ! command -v rustup >/dev/null 2>&1; then
    echo "setup.sh: rustup not found on PATH; install the Rust toolchain first" >&2
    exit 1
fi
rustup target add "${RUST_TARGETS[@]}"
rustup component add "${RUST_COMPONENTS[@]}"

# The test runner: cargo-nextest runs the suite's test binaries in parallel.
if cargo nextest --version >/dev/null 2>&1; then
    echo "setup.sh: cargo-nextest present: $(cargo nextest --version | head -n1)"
else
    cargo install --locked cargo-nextest
fi
