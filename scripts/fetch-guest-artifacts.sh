#!/usr/bin/env bash
# Fetches and prepares the guest artifacts of the real-Linux test tier
# (tests/linux_tier.rs): the Debian cloud kernel and busybox-static, downloaded as
# packages with `apt-get download` and unpacked with `dpkg -x` under target/ (never
# installed into the system, nothing written to /boot).
#
# Produces, under target/guest-artifacts (or $MONOVIRT_GUEST_ARTIFACTS):
#   debs/                 the downloaded .deb files (the cache; delete it to refresh)
#   kernel/, busybox/     the unpacked packages
#   vmlinuz               the kernel as a bzImage
#   vmlinux               the same kernel as an ELF, extracted from the bzImage's payload;
#                         checked to be an x86_64 ELF that carries the PVH entry note
#   kernel-release        the kernel's release string (its /lib/modules folder name)
#   vsock-echo            tests/linux/vsock-echo.rs, built by rustc as a static program:
#                         the vsock tool of both initramfs images (busybox has none)
#   l2-initrd.cpio.gz     the L2 guest's initramfs: busybox, vsock-echo, the kernel's
#                         virtio, vfat and iso9660 modules and tests/linux/l2-init.sh
#                         as /init
#   l1-base.cpio          the base of the L1 host's initramfs: busybox, vsock-echo, the
#                         kernel's kvm, tun, bridge, veth and nftables modules and
#                         tests/linux/l1-init.sh as /init.
#                         The test appends a second archive with monovirt and the L2 images
#                         at run time.
#
# With the argument `ppc64el`, the same for the nested ppc64le KVM tier
# (tests/ppc64le_tier.rs), under target/guest-artifacts/ppc64el: the Debian ppc64el kernel
# (linux-image-powerpc64le) and busybox-static:ppc64el (apt needs the ppc64el
# architecture, which scripts/setup.sh adds), with
#   vmlinux               the kernel's own ELF (boot/vmlinux-*), checked to be ppc64le
#   l2-initrd.cpio.gz     busybox and tests/linux/l2-init.sh as /init (no modules: the
#                         pseries console and interrupt controller are built in)
#   l1-base.cpio          busybox, kvm and kvm_hv, tests/linux/l1-init.sh as /init
#
# Idempotent: packages are downloaded only when debs/ lacks them, and each image is
# rebuilt only when one of its inputs is newer than it.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${MONOVIRT_GUEST_ARTIFACTS:-$repo/target/guest-artifacts}
arch=${1:-amd64}
l2_init=$repo/tests/linux/l2-init.sh
l1_init=$repo/tests/linux/l1-init.sh
self=$repo/scripts/fetch-guest-artifacts.sh
vsock_echo_src=$repo/tests/linux/vsock-echo.rs
# The Debian kernel flavour (linux-image-<flavour> is the metapackage) and how packages
# are named for apt-get download.
flavour=cloud-amd64
pkg_arch=
case $arch in
amd64) ;;
ppc64el)
    out=$out/ppc64el
    flavour=powerpc64le
    pkg_arch=:ppc64el
    ;;
*)
    echo "fetch-guest-artifacts: unknown architecture $arch (amd64 or ppc64el)" >&2
    exit 1
    ;;
esac

# Modules the L2 initramfs carries (with their dependencies from modules.dep). Those the
# kernel has built in are skipped. Later issues add theirs here.
L2_MODULES=(
    virtio_pci
    virtio_blk
    virtio_net
    virtio_console
    virtio_rng
    virtio_balloon
    vmw_vsock_virtio_transport
    # The file systems of cloud-init data disks (l2-init.sh's cloudinit_mount): vfat
    # (monovirt writes NoCloud and ConfigDrive disks as vfat) and iso9660 (as KubeVirt and
    # OpenStack write them), with the code pages vfat mounts with by default (the
    # kernel's FAT_DEFAULT_CODEPAGE 437 and FAT_DEFAULT_IOCHARSET ascii) and utf8.
    vfat
    isofs
    nls_cp437
    nls_ascii
    nls_utf8
)
# Modules that give L1 a real kvm_amd /dev/kvm, and the tap devices of its L2 guests;
# then what `monovirt serve --network` needs there: the default network's bridge, the
# veth of the test's "outside" namespace, and the nftables expressions of monovirt's NAT
# table (src/network/nat.rs: masquerade, dnat, fib, ct).
L1_MODULES=(
    irqbypass
    kvm
    kvm_amd
    tun
    bridge
    veth
    nf_tables
    nft_chain_nat
    nft_masq
    nft_nat
    nft_fib_inet
    nft_ct
)
if [[ $arch == ppc64el ]]; then
    # The ppc64le L2 guests have no virtio devices yet (docs/arches.md).
    L2_MODULES=()
    # KVM-HV: L1 is a nested hypervisor under QEMU's pseries (cap-nested-hv).
    L1_MODULES=(
        kvm
        kvm_hv
    )
fi

log() { echo "fetch-guest-artifacts: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

for tool in apt-get apt-cache dpkg depmod cpio gzip lz4 xz zstd readelf od dd flock rustc; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found (run scripts/setup.sh)"
done

mkdir -p "$out/debs"
# One run at a time: tests that run in parallel each call this script.
exec 9>"$out/.lock"
flock 9

# --- Download ---------------------------------------------------------------------------

# The one .deb in debs/ whose package name is $1, or nothing.
cached_deb() {
    local matches=("$out/debs/$1"_*.deb)
    [[ -e ${matches[0]} ]] && echo "${matches[0]}"
}

# The versioned kernel package the metapackage depends on (linux-image-X.Y.Z-N-cloud-amd64).
kernel_package() {
    local cached
    cached=$(find "$out/debs" -maxdepth 1 -name "linux-image-*-${flavour}_*.deb" \
        ! -name "linux-image-${flavour}_*" -printf '%f\n' | head -n1)
    if [[ -n $cached ]]; then
        echo "${cached%%_*}"
        return
    fi
    apt-cache depends "linux-image-$flavour$pkg_arch" |
        awk -v f="$flavour" '$1 == "Depends:" { sub(/:.*/, "", $2) } $1 == "Depends:" && $2 ~ ("^linux-image-.*-" f "$") { print $2; exit }'
}

download() {
    local pkg=$1
    if [[ -n $(cached_deb "$pkg") ]]; then
        return
    fi
    log "downloading $pkg$pkg_arch"
    # The download runs as root: the cache folder need not be readable by apt's sandbox user.
    (cd "$out/debs" && apt-get -o APT::Sandbox::User=root download "$pkg$pkg_arch") ||
        die "apt-get download $pkg$pkg_arch failed (is 'apt-get update' done?)"
}

kpkg=$(kernel_package)
[[ -n $kpkg ]] || die "cannot resolve the kernel package of linux-image-$flavour$pkg_arch (run 'apt-get update')"
download "linux-image-$flavour"
download "$kpkg"
download busybox-static

# --- Unpack -----------------------------------------------------------------------------

# Unpacks deb $1 into folder $2 unless it already holds that deb (named in $2.unpacked).
unpack() {
    local deb=$1 dir=$2
    if [[ -d $dir && $(cat "$dir.unpacked" 2>/dev/null) == "$(basename "$deb")" ]]; then
        return
    fi
    log "unpacking $(basename "$deb")"
    rm -rf "$dir" "$dir.tmp" "$dir.unpacked"
    mkdir -p "$dir.tmp"
    dpkg -x "$deb" "$dir.tmp"
    # The package's postinst would run depmod; do it here, in the unpacked tree only.
    if [[ -d $dir.tmp/lib/modules ]]; then
        local release
        for release in "$dir.tmp"/lib/modules/*; do
            depmod -b "$dir.tmp" "${release##*/}"
        done
    fi
    mv "$dir.tmp" "$dir"
    basename "$deb" >"$dir.unpacked"
}

unpack "$(cached_deb "$kpkg")" "$out/kernel"
unpack "$(cached_deb busybox-static)" "$out/busybox"

busybox=$out/busybox/bin/busybox
[[ -x $busybox ]] || die "busybox-static has no bin/busybox"

if [[ $arch == ppc64el ]]; then
    # Debian's ppc64el kernel is the ELF vmlinux itself (what pseries boots).
    image=$(find "$out/kernel/boot" -maxdepth 1 -name 'vmlinux-*' | head -n1)
    [[ -n $image ]] || die "$kpkg has no boot/vmlinux-*"
    release=${image##*/vmlinux-}
    readelf -h "$image" | grep -q 'Machine:.*PowerPC64' ||
        die "$image is not a PowerPC64 ELF"
    readelf -h "$image" | grep -q 'little endian' || die "$image is not little-endian"
    ln -sfn "kernel/boot/vmlinux-$release" "$out/vmlinux"
else
    image=$(find "$out/kernel/boot" -maxdepth 1 -name 'vmlinuz-*' | head -n1)
    [[ -n $image ]] || die "$kpkg has no boot/vmlinuz-*"
    release=${image##*/vmlinuz-}
    ln -sfn "kernel/boot/vmlinuz-$release" "$out/vmlinuz"
fi
bzimage=$image
moddir=$out/kernel/lib/modules/$release
[[ -f $moddir/modules.dep ]] || die "$kpkg has no lib/modules/$release/modules.dep"
echo "$release" >"$out/kernel-release.tmp"
mv "$out/kernel-release.tmp" "$out/kernel-release"

# --- vmlinux from the bzImage -----------------------------------------------------------

# Little-endian unsigned integer of $3 bytes at offset $2 of file $1.
read_le() {
    od -An -t u"$3" -j "$2" -N "$3" --endian=little "$1" | tr -d ' '
}

# Extracts the ELF vmlinux from bzImage $1 into $2. The x86 boot protocol (2.08+) gives
# the compressed payload's place: payload_offset (0x248) and payload_length (0x24c),
# counted from the protected-mode code, which starts after the (setup_sects + 1) sectors
# of real-mode setup (setup_sects at 0x1f1; 0 means 4). The kernel's build appends the
# uncompressed size as 4 little-endian bytes to the compressed stream; it is cut off
# before decompressing and checked against the result.
extract_vmlinux() {
    local img=$1 dst=$2
    local magic setup_sects version payload_offset payload_length start stream size
    magic=$(dd if="$img" bs=1 skip=$((0x202)) count=4 status=none)
    [[ $magic == HdrS ]] || die "$img is not a bzImage (no HdrS)"
    version=$(read_le "$img" $((0x206)) 2)
    ((version >= 0x208)) || die "$img: boot protocol $version has no payload fields"
    setup_sects=$(read_le "$img" $((0x1f1)) 1)
    ((setup_sects == 0)) && setup_sects=4
    payload_offset=$(read_le "$img" $((0x248)) 4)
    payload_length=$(read_le "$img" $((0x24c)) 4)
    start=$(((setup_sects + 1) * 512 + payload_offset))
    stream=$((payload_length - 4))

    local decompress
    case $(od -An -tx1 -j "$start" -N 6 "$img" | tr -d ' \n') in
    02214c18*) decompress="lz4 -dc" ;; # the legacy frame format the kernel writes
    28b52ffd*) decompress="zstd -dc" ;;
    fd377a585a00) decompress="xz -dc" ;;
    5d0000*) decompress="xz --format=lzma -dc" ;;
    1f8b*) decompress="gzip -dc" ;;
    *) die "$img: unknown payload compression" ;;
    esac
    log "extracting vmlinux ($decompress, $stream bytes at $start)"
    dd if="$img" iflag=skip_bytes,count_bytes skip="$start" count="$stream" bs=1M status=none |
        $decompress >"$dst.tmp" ||
        die "$img: decompressing the payload failed"

    size=$(read_le "$img" $((start + stream)) 4)
    [[ $(stat -c %s "$dst.tmp") == "$size" ]] ||
        die "$img: vmlinux is $(stat -c %s "$dst.tmp") bytes, the bzImage says $size"
    readelf -h "$dst.tmp" | grep -q 'Machine:.*X86-64' ||
        die "$img: the payload is not an x86-64 ELF"
    # The PVH entry point is the Xen ELF note XEN_ELFNOTE_PHYS32_ENTRY (type 18).
    readelf -n "$dst.tmp" | awk '$1 == "Xen" && ($3 == "0x00000012" || $0 ~ /\(0x00000012\)/) { found = 1 } END { exit !found }' ||
        die "$img: vmlinux has no PVH entry note (Xen note type 18)"
    mv "$dst.tmp" "$dst"
}

if [[ $arch == amd64 && (! -f $out/vmlinux || $bzimage -nt $out/vmlinux) ]]; then
    extract_vmlinux "$bzimage" "$out/vmlinux"
fi

# --- vsock-echo ---------------------------------------------------------------------------

# std only, so rustc alone builds it; the C library linked in, so it runs in L2, which
# has no libc at all.
# (amd64 only: the ppc64le guests have no virtio devices yet.)
vsock_echo=$out/vsock-echo
if [[ $arch == ppc64el ]]; then
    vsock_echo=
elif [[ ! -x $vsock_echo || $vsock_echo_src -nt $vsock_echo ]]; then
    log "building vsock-echo"
    rustc --edition 2021 --target x86_64-unknown-linux-gnu -C opt-level=2 \
        -C target-feature=+crt-static -C strip=symbols \
        -o "$vsock_echo.tmp" "$vsock_echo_src" ||
        die "building tests/linux/vsock-echo.rs failed"
    mv "$vsock_echo.tmp" "$vsock_echo"
fi

# --- Initramfs images -------------------------------------------------------------------

# Prints the paths (relative to the modules folder) of the modules named in $@ and of all
# their dependencies, dependencies first, per modules.dep. Built-in modules print nothing.
resolve_modules() {
    local -A seen=()
    local order=()
    visit() {
        local path=$1 dep
        [[ -n ${seen[$path]:-} ]] && return
        seen[$path]=1
        for dep in $(awk -v m="$path:" '$1 == m { $1 = ""; print; exit }' "$moddir/modules.dep"); do
            visit "$dep"
        done
        order+=("$path")
    }
    local name path pattern
    for name in "$@"; do
        # modules.dep spells module files with '-' or '_' as the kernel tree does.
        pattern=$(echo "$name" | sed 's/[-_]/[-_]/g')
        path=$(grep -Eo -m1 "^[^:]*/${pattern}\.ko(\.[a-z]+)?:" "$moddir/modules.dep" | tr -d :) || true
        if [[ -z $path ]]; then
            if grep -Eq "/${pattern}\.ko(\.[a-z]+)?\$" "$moddir/modules.builtin"; then
                continue
            fi
            die "module $name is neither in modules.dep nor built in"
        fi
        visit "$path"
    done
    printf '%s\n' "${order[@]}"
}

# Builds initramfs $1 (a newc cpio, gzip-compressed when named *.gz) with busybox,
# vsock-echo, the modules $3... (listed in load order in /etc/modules) and init script $2
# as /init.
build_initramfs() {
    local dst=$1 init=$2
    shift 2
    local stage
    stage=$(mktemp -d)
    mkdir -p "$stage"/{bin,dev,proc,sys,tmp,etc,lib/modules/"$release"}
    cp "$busybox" "$stage/bin/busybox"
    if [[ -n $vsock_echo ]]; then
        cp "$vsock_echo" "$stage/bin/vsock-echo"
    fi
    cp "$init" "$stage/init"
    chmod 755 "$stage/init"
    local mod mods=
    if (($#)); then
        mods=$(resolve_modules "$@")
    fi
    : >"$stage/etc/modules"
    for mod in $mods; do
        mkdir -p "$stage/lib/modules/$release/$(dirname "$mod")"
        cp "$moddir/$mod" "$stage/lib/modules/$release/$mod"
        echo "/lib/modules/$release/$mod" >>"$stage/etc/modules"
    done
    echo "$release" >"$stage/etc/kernel-release"
    (
        cd "$stage"
        if [[ $dst == *.gz ]]; then
            find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 | gzip -9n
        else
            find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0
        fi
    ) >"$dst.tmp"
    rm -rf "$stage"
    mv "$dst.tmp" "$dst"
    log "built $dst ($(stat -c %s "$dst") bytes)"
}

# True when file $1 is missing or older than any of the other arguments.
stale() {
    local dst=$1 src
    shift
    [[ -f $dst ]] || return 0
    for src in "$@"; do
        [[ $src -nt $dst ]] && return 0
    done
    return 1
}

if stale "$out/l2-initrd.cpio.gz" "$l2_init" "$self" "$busybox" "$vsock_echo" "$moddir/modules.dep"; then
    build_initramfs "$out/l2-initrd.cpio.gz" "$l2_init" ${L2_MODULES[@]+"${L2_MODULES[@]}"}
fi
if stale "$out/l1-base.cpio" "$l1_init" "$self" "$busybox" "$vsock_echo" "$moddir/modules.dep"; then
    build_initramfs "$out/l1-base.cpio" "$l1_init" "${L1_MODULES[@]}"
fi

log "ready in $out (kernel $release)"
