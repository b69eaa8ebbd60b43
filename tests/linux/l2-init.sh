#!/bin/busybox sh
# /init of the L2 guest of the real-Linux test tier: the Debian cloud kernel booted by
# `monovirt run` inside L1. It runs the task named by `monovirt.task=` on the kernel
# command line and reports with lines that start with MONOVIRT-L2- (and nothing else
# prints that prefix), so tests/linux_tier.rs can parse them out of the serial console.
#
# Tasks (add yours to the case below):
#   poweroff  report the facts, then power off (the VMM exits with reason Shutdown)
#   reboot    report the facts, then reboot (the VMM reports reason Reboot)
#   modules   load the kernel modules in /etc/modules, report, then power off
#   devices   load the virtio modules and check every virtio device with busybox tools
#             and vsock-echo (L1's devices_scenario sets up the host side), power off
#   cloudinit load the modules, mount the VM's cloud-init disks (NoCloud `cidata`,
#             ConfigDrive `config-2`) read-only and print their files, then a shell
#   shell     an interactive shell on the console (also for debugging by hand); it
#             prints MONOVIRT-L2-SHELL-READY just before the shell starts
#
# With monovirt.http=A.B.C.D on the command line (a VM on the default network of
# L1's `monovirt serve --network`), the shell first runs net_checks: DHCP, ping, and
# pages fetched from that server across the node's NAT.

/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# The initramfs has no /dev/console node, so the kernel could not give init a console:
# take it now that devtmpfs is mounted.
exec </dev/console >/dev/console 2>&1

task=
http_server=
for arg in $(cat /proc/cmdline); do
    case $arg in
    monovirt.task=*) task=${arg#monovirt.task=} ;;
    monovirt.http=*) http_server=${arg#monovirt.http=} ;;
    esac
done

echo "MONOVIRT-L2-INIT-OK kernel=$(uname -r) task=$task"

# The facts the tests check: every vCPU online, the memory the kernel manages, and a
# timer that wakes a sleeping task (without one, nothing after the first sleep runs).
facts() {
    cpus=$(grep -c '^processor' /proc/cpuinfo)
    online=$(cat /sys/devices/system/cpu/online)
    memtotal=$(awk '$1 == "MemTotal:" { print $2 }' /proc/meminfo)
    clockevent=$(cat /sys/devices/system/clockevents/clockevent0/current_device)
    echo "MONOVIRT-L2-RESULT cpus=$cpus online=$online memtotal_kb=$memtotal clockevent=$clockevent"
    usleep 100000
    echo "MONOVIRT-L2-TIMER-OK"
}

# Loads every module listed in /etc/modules (dependencies come first there).
load_modules() {
    loaded=0
    failed=
    for module in $(cat /etc/modules); do
        if insmod "$module"; then
            loaded=$((loaded + 1))
        else
            failed="$failed,${module##*/}"
        fi
    done
    echo "MONOVIRT-L2-MODULES loaded=$loaded failed=${failed#,}"
}

# Waits up to 10 s for path $1 to exist.
wait_for() {
    tries=100
    while [ ! -e "$1" ] && [ $tries -gt 0 ]; do
        usleep 100000
        tries=$((tries - 1))
    done
    [ -e "$1" ]
}

# The first N MiB at MiB offset M of device or file $1 ($2 = M, $3 = N), as a sha256.
sha_mib() {
    dd if="$1" bs=1048576 skip="$2" count="$3" 2>/dev/null | sha256sum | cut -d' ' -f1
}

# The virtio checks. The host side (L1's devices_scenario in l1-init.sh) gave this guest
# two disks (vda read-write with serial mvdisk0rw, random data in its first MiB; vdb
# read-only with serial mvdisk1ro), a NIC with MAC 52:54:00:4d:56:02 on a tap whose L1
# end is 10.0.77.1/24 with TCP port 7001 taking an upload and 7002 serving a download,
# virtio-console output to a file, virtio-rng, and vsock (CID 3) whose host side echoes
# on port 5001 and calls guest port 5000.
devices() {
    # The host-to-guest vsock call may come at any time from now on: listen first.
    timeout 90 vsock-echo serve vsock:5000 >/tmp/vsock-served 2>&1 &
    served_pid=$!

    # Which driver each virtio device (by virtio device ID) is bound to.
    bound=
    for dev in /sys/bus/virtio/devices/*; do
        id=$(cat "$dev/device")
        driver=$(readlink "$dev/driver")
        bound="$bound,$((id)):${driver##*/}"
    done
    echo "MONOVIRT-L2-VIRTIO bound=${bound#,}"

    # Disks. busybox has no udev: the /dev/disk/by-id links are made here from each
    # disk's serial in sysfs, named as udev's 60-persistent-storage.rules names them.
    mkdir -p /dev/disk/by-id
    for block in /sys/block/vd*; do
        name=${block##*/}
        serial=$(cat "$block/serial" 2>/dev/null)
        [ -n "$serial" ] && ln -s "../../$name" "/dev/disk/by-id/virtio-$serial"
        echo "MONOVIRT-L2-DISK name=$name serial=$serial ro=$(cat "$block/ro")" \
            "sectors=$(cat "$block/size")" \
            "discard_max=$(cat "$block/queue/discard_max_bytes")" \
            "write_zeroes_max=$(cat "$block/queue/write_zeroes_max_bytes")"
    done
    rw=/dev/disk/by-id/virtio-mvdisk0rw
    ro=/dev/disk/by-id/virtio-mvdisk1ro
    if [ -e $rw ] && [ -e $ro ]; then
        # Read what L1 put there; write a fresh MiB at 2 MiB and make it durable (fsync is
        # a virtio-blk flush), drop the page cache and read it back from the device;
        # discard the MiB at 3 MiB (monovirt punches a hole, which reads as zeros). L1
        # checks the image file afterwards.
        read_sha=$(sha_mib $rw 0 1)
        dd if=/dev/urandom of=/tmp/pattern bs=1048576 count=1 2>/dev/null
        written_sha=$(sha_mib /tmp/pattern 0 1)
        dd if=/tmp/pattern of=$rw bs=1048576 seek=2 conv=fsync 2>/dev/null &&
            write=ok || write=failed
        blkdiscard -o 3145728 -l 1048576 $rw && discard=ok || discard=failed
        sync
        echo 3 >/proc/sys/vm/drop_caches
        readback_sha=$(sha_mib $rw 2 1)
        discarded_sha=$(sha_mib $rw 3 1)
        echo "MONOVIRT-L2-BLK read_sha=$read_sha written_sha=$written_sha write=$write" \
            "readback_sha=$readback_sha discard=$discard discarded_sha=$discarded_sha"
        # The read-only disk refuses a write.
        if dd if=/dev/zero of=$ro bs=4096 count=1 conv=fsync 2>/dev/null; then
            ro_write=accepted
        else
            ro_write=refused
        fi
        echo "MONOVIRT-L2-BLK-RO write=$ro_write sha=$(sha_mib $ro 0 1)"
    fi

    # Network: the virtio-net interface, its MAC and link, ARP + ping to L1, and a TCP
    # transfer each way.
    nic=
    for net in /sys/class/net/*; do
        case $(readlink "$net/device/driver") in
        */virtio_net) nic=${net##*/} ;;
        esac
    done
    if [ -n "$nic" ]; then
        ip link set "$nic" up
        ip addr add 10.0.77.2/24 dev "$nic"
        received=$(ping -c 3 -W 5 10.0.77.1 | sed -n 's/.* \([0-9]*\) packets received.*/\1/p')
        dd if=/dev/urandom of=/tmp/upload bs=1048576 count=2 2>/dev/null
        nc 10.0.77.1 7001 </tmp/upload && upload=ok || upload=failed
        nc 10.0.77.1 7002 </dev/null >/tmp/download && download=ok || download=failed
        echo "MONOVIRT-L2-NET nic=$nic mac=$(cat "/sys/class/net/$nic/address")" \
            "carrier=$(cat "/sys/class/net/$nic/carrier") ping_received=$received" \
            "upload=$upload upload_sha=$(sha_mib /tmp/upload 0 2)" \
            "download=$download download_bytes=$(stat -c %s /tmp/download)" \
            "download_sha=$(sha_mib /tmp/download 0 2)"
    fi

    # virtio-rng: the kernel picked it as its hardware RNG, and it gives bytes.
    rng_current=$(cat /sys/class/misc/hw_random/rng_current 2>/dev/null)
    rng=$(dd if=/dev/hwrng bs=32 count=1 2>/dev/null | od -An -tx1 | tr -d ' \n')
    echo "MONOVIRT-L2-RNG current=$rng_current hex=$rng"

    # virtio-console: a line on hvc0 reaches the host's file (L1 prints it).
    if wait_for /dev/hvc0; then
        echo "token=${rng:-norandom}" >/dev/hvc0 && hvc0=written || hvc0=failed
    else
        hvc0=missing
    fi
    echo "MONOVIRT-L2-HVC0 state=$hvc0 token=${rng:-norandom}"

    # vsock, guest to host: L1's echo server behind <socket>_5001.
    echo "MONOVIRT-L2-VSOCK-CALL $(timeout 60 vsock-echo call vsock:2:5001 1048576 20 2>&1)"
    # Host to guest: L1 called port 5000; the listener started above says what it echoed.
    wait $served_pid
    echo "MONOVIRT-L2-VSOCK-SERVED $(cat /tmp/vsock-served)"
}

# --- cloud-init data disks -----------------------------------------------------------
# The NoCloud (`cidata`) and ConfigDrive (`config-2`) disks a VM's cloudInitNoCloud and
# cloudInitConfigDrive volumes become, found by their file system label as cloud-init
# finds them and mounted with the kernel's own vfat or iso9660 module (load_modules).

# Mounts the cloud-init disk labelled $1 read-only at $2, whichever of vfat and iso9660
# it is, waiting up to 10 s for the disk to show up. Prints the device; fails (and prints
# nothing) when no disk has the label or it does not mount.
cloudinit_mount() {
    local label=$1 dir=$2 tries=100 dev=
    while [ -z "$dev" ]; do
        dev=$(findfs "LABEL=$label" 2>/dev/null)
        [ -n "$dev" ] && break
        [ $tries -gt 0 ] || return 1
        usleep 100000
        tries=$((tries - 1))
    done
    mkdir -p "$dir"
    mount -t vfat -o ro "$dev" "$dir" 2>/dev/null ||
        mount -t iso9660 -o ro "$dev" "$dir" 2>/dev/null || return 1
    echo "$dev"
}

# Prints file $3 (a path under mount point $2) of the disk of data source $1 with its
# size and sha256, and its content between BEGIN and END lines (END on a line of its
# own, also when the file does not end with a newline).
cloudinit_show() {
    local source=$1 file=$2/$3
    if [ ! -f "$file" ]; then
        echo "MONOVIRT-L2-CLOUDINIT-MISSING source=$source name=$3"
        return
    fi
    echo "MONOVIRT-L2-CLOUDINIT-FILE source=$source name=$3 bytes=$(stat -c %s "$file")" \
        "sha256=$(sha256sum <"$file" | cut -d' ' -f1)"
    echo "MONOVIRT-L2-CLOUDINIT-BEGIN source=$source name=$3"
    cat "$file"
    [ -z "$(tail -c 1 "$file")" ] || echo
    echo "MONOVIRT-L2-CLOUDINIT-END source=$source name=$3"
}

# Mounts the disk of data source $1 (label $2) at /mnt/$2 and shows its files $3...
cloudinit_report() {
    local source=$1 label=$2 dir=/mnt/$2 dev name
    shift 2
    if ! dev=$(cloudinit_mount "$label" "$dir"); then
        echo "MONOVIRT-L2-CLOUDINIT-NODISK source=$source label=$label"
        return
    fi
    echo "MONOVIRT-L2-CLOUDINIT-MOUNTED source=$source label=$label dev=$dev" \
        "fstype=$(awk -v d="$dir" '$2 == d { print $3 }' /proc/mounts)"
    for name in "$@"; do
        cloudinit_show "$source" "$dir" "$name"
    done
    umount "$dir"
}

cloudinit() {
    cloudinit_report nocloud cidata meta-data user-data network-config
    cloudinit_report configdrive config-2 openstack/latest/meta_data.json \
        openstack/latest/user_data openstack/latest/network_data.json
    echo "MONOVIRT-L2-CLOUDINIT-DONE"
}

# --- the default network ----------------------------------------------------------------
# The default network as a KubeVirt guest sees it, with busybox's own tools: udhcpc on
# the first virtio-net NIC (the lease from monovirt's DHCP server), ping of the gateway
# it names, and wget of the page and of the CGI (which answers the client address it
# saw) of the HTTP server at $http_server, behind the node's masquerade NAT. Reports
# MONOVIRT-L2-NET-* lines, then MONOVIRT-L2-NET-DONE.
net_checks() {
    [ -d /sys/module/virtio_net ] || load_modules
    local nic= net rc router received page remote tries=100
    while [ -z "$nic" ] && [ $tries -gt 0 ]; do
        for net in /sys/class/net/*; do
            case $(readlink "$net/device/driver") in
            */virtio_net) nic=${net##*/} && break ;;
            esac
        done
        [ -n "$nic" ] || usleep 100000
        tries=$((tries - 1))
    done
    if [ -z "$nic" ]; then
        echo "MONOVIRT-L2-NET-FAILED reason=no-virtio-net-nic"
        echo "MONOVIRT-L2-NET-DONE"
        return
    fi
    ip link set lo up
    ip link set "$nic" up
    cat >/tmp/udhcpc.sh <<'EOF'
#!/bin/sh
[ "$1" = bound ] || exit 0
ip addr add "$ip/$mask" dev "$interface"
[ -n "$router" ] && ip route add default via "$router"
echo "ip=$ip mask=$mask router=$router dns=${dns:-none} lease=$lease" >/tmp/lease
EOF
    chmod 755 /tmp/udhcpc.sh
    udhcpc -i "$nic" -f -q -n -t 10 -T 2 -s /tmp/udhcpc.sh >/tmp/udhcpc.log 2>&1
    rc=$?
    echo "MONOVIRT-L2-NET-LEASE nic=$nic mac=$(cat "/sys/class/net/$nic/address")" \
        "rc=$rc $(cat /tmp/lease 2>/dev/null)"
    router=$(sed -n 's/.*router=\([0-9.]*\).*/\1/p' /tmp/lease 2>/dev/null)
    received=$(ping -c 3 -W 5 "${router:-0.0.0.0}" | sed -n 's/.* \([0-9]*\) packets received.*/\1/p')
    echo "MONOVIRT-L2-NET-PING gateway=${router:-none} received=${received:-0}"
    # (`timeout` rather than wget's own -T, which crashes some busybox builds.)
    page=$(timeout 60 wget -q -O - "http://$http_server/" 2>/dev/null)
    remote=$(timeout 60 wget -q -O - "http://$http_server/cgi-bin/remote" 2>/dev/null)
    echo "MONOVIRT-L2-NET-WGET server=$http_server page=${page:-none} remote=${remote:-none}"
    echo "MONOVIRT-L2-NET-DONE"
}

shell() {
    [ -n "$http_server" ] && net_checks
    echo "MONOVIRT-L2-SHELL-READY"
    exec setsid cttyhack sh
}

case $task in
poweroff)
    facts
    echo "MONOVIRT-L2-POWEROFF"
    poweroff -f
    ;;
reboot)
    facts
    echo "MONOVIRT-L2-REBOOT"
    reboot -f
    ;;
modules)
    facts
    load_modules
    echo "MONOVIRT-L2-POWEROFF"
    poweroff -f
    ;;
devices)
    facts
    load_modules
    devices
    echo "MONOVIRT-L2-POWEROFF"
    poweroff -f
    ;;
cloudinit)
    facts
    load_modules
    cloudinit
    shell
    ;;
shell)
    shell
    ;;
*)
    echo "MONOVIRT-L2-TASK-UNKNOWN task=$task"
    poweroff -f
    ;;
esac

# poweroff -f and reboot -f do not return; if they do, say so and stop here.
echo "MONOVIRT-L2-HALT-FAILED task=$task"
while true; do sleep 3600; done
