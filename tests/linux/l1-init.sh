#!/bin/busybox sh
# /init of the L1 host of both nested-KVM test tiers, the same script on each
# architecture:
# - x86_64 (tests/linux_tier.rs): the Debian cloud kernel under QEMU (TCG, an EPYC CPU
#   with SVM and NPT); its own irqbypass, kvm and kvm_amd modules give a real kvm_amd
#   /dev/kvm with nested paging.
# - ppc64le (tests/ppc64le_tier.rs): the Debian ppc64el kernel under QEMU's pseries
#   machine (TCG, POWER9, cap-nested-hv=on); its own kvm and kvm_hv modules give a KVM-HV
#   /dev/kvm running its guests through the nested-HV interface.
# It loads the modules listed in /etc/modules, then runs the scenarios the test put in
# /etc/scenarios.sh, each one `monovirt run` of an L2 guest (monovirt cross-built for
# ppc64le there). Every line it reports starts with MONOVIRT-L1-; the L2 guests' own lines
# (MONOVIRT-L2-) appear between a scenario's BEGIN and END lines.

/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# The initramfs has no /dev/console node, so the kernel could not give init a console:
# take it now that devtmpfs is mounted.
exec </dev/console >/dev/console 2>&1

echo "MONOVIRT-L1-INIT-OK kernel=$(uname -r) cpus=$(nproc) machine=$(uname -m)"

for module in $(cat /etc/modules); do
    insmod "$module" || echo "MONOVIRT-L1-INSMOD-FAILED module=${module##*/}"
done

# The KVM module this architecture's tier needs, and the facts its test checks.
case $(uname -m) in
ppc64le) kvm_module=kvm_hv ;;
*) kvm_module=kvm_amd ;;
esac
if [ -c /dev/kvm ] && [ -d /sys/module/$kvm_module ]; then
    if [ $kvm_module = kvm_amd ]; then
        echo "MONOVIRT-L1-KVM-OK npt=$(cat /sys/module/kvm_amd/parameters/npt)" \
            "nested=$(cat /sys/module/kvm_amd/parameters/nested)"
    else
        echo "MONOVIRT-L1-KVM-OK hv=1"
    fi
else
    echo "MONOVIRT-L1-KVM-MISSING"
    dmesg | tail -n 40
    echo "MONOVIRT-L1-DONE"
    poweroff -f
fi

# The monovirt binary (with its shared libraries and loader) runs here.
if [ -x /usr/bin/monovirt ]; then
    if monovirt --help >/dev/null 2>&1; then
        echo "MONOVIRT-L1-MONOVIRT-OK"
    else
        echo "MONOVIRT-L1-MONOVIRT-FAILED rc=$?"
    fi
fi

# Runs one scenario: `scenario NAME ARGS...` runs `monovirt run ARGS...`, bounded by
# SCENARIO_TIMEOUT seconds, between lines that name it and give its exit code. At the
# timeout a watchdog first reports what each of monovirt's threads is doing
# (`hang_report`), then sends SIGKILL, which monovirt cannot handle, so rc=137 means
# exactly that.
SCENARIO_TIMEOUT=180
scenario() {
    name=$1
    shift
    echo "MONOVIRT-L1-SCENARIO-BEGIN name=$name"
    start=$(cut -d' ' -f1 /proc/uptime)
    monovirt run "$@" </dev/null &
    pid=$!
    (
        sleep "$SCENARIO_TIMEOUT"
        hang_report "$pid"
        kill -KILL "$pid"
    ) </dev/null &
    watchdog=$!
    wait "$pid"
    rc=$?
    kill "$watchdog" 2>/dev/null
    end=$(cut -d' ' -f1 /proc/uptime)
    printf '\nMONOVIRT-L1-SCENARIO-END name=%s rc=%s start=%s end=%s\n' "$name" "$rc" "$start" "$end"
}

# One MONOVIRT-L1-HANG line per thread of process $1 (its name, scheduler state, the
# kernel function it sleeps in, its system call number and first argument), each followed
# by its kernel stack, so that the test's failure message says where a hung VMM was: in
# KVM_RUN (the vCPU ioctl), blocked writing its console, or waiting on a lock.
hang_report() {
    echo
    for task in /proc/$1/task/*; do
        [ -d "$task" ] || continue
        state=$(sed 's/.*) //' "$task/stat" | cut -d' ' -f1)
        echo "MONOVIRT-L1-HANG tid=${task##*/} comm=$(cat "$task/comm") state=$state" \
            "wchan=$(cat "$task/wchan" 2>/dev/null) syscall=$(cut -d' ' -f1-2 "$task/syscall" 2>/dev/null | tr ' ' ,)"
        sed 's/^/MONOVIRT-L1-HANG-STACK /' "$task/stack" 2>/dev/null
    done
}

# The host side of the L2 virtio checks (l2-init.sh's `devices` task):
# `devices_scenario NAME ARGS...` sets up disk images, a tap, TCP and vsock peers, runs
# `scenario NAME ARGS... <the device options>`, then reports what the host side saw on
# MONOVIRT-L1-DEV-* lines. Background peers write to files, never to the console, which
# belongs to the guest while it runs.
devices_scenario() {
    name=$1
    shift
    dir=/tmp/devices
    mkdir -p $dir
    # tmpfs, whose files can have holes punched in them (the guest's discard).
    mount -t tmpfs tmpfs $dir
    # vda: 4 MiB, random data in its first MiB (the guest reads it), zeros elsewhere,
    # random again at 3 MiB (the guest discards it).
    dd if=/dev/zero of=$dir/vda.img bs=1048576 count=4 2>/dev/null
    dd if=/dev/urandom of=$dir/vda.img bs=1048576 count=1 conv=notrunc 2>/dev/null
    dd if=/dev/urandom of=$dir/vda.img bs=1048576 seek=3 count=1 conv=notrunc 2>/dev/null
    # vdb: 1 MiB of random data, read-only.
    dd if=/dev/urandom of=$dir/vdb.img bs=1048576 count=1 2>/dev/null
    echo "MONOVIRT-L1-DEV-DISKS vda_first_sha=$(dd if=$dir/vda.img bs=1048576 count=1 2>/dev/null | sha256sum | cut -c1-64)" \
        "vdb_sha=$(sha256sum <$dir/vdb.img | cut -c1-64)"

    # The tap, made persistent here so that its address is set before the guest runs.
    tunctl -t mvtap0 >/dev/null && ip addr add 10.0.77.1/24 dev mvtap0 &&
        ip link set mvtap0 up || echo "MONOVIRT-L1-DEV-TAP-FAILED"
    dd if=/dev/urandom of=$dir/download bs=1048576 count=2 2>/dev/null
    echo "MONOVIRT-L1-DEV-NET download_sha=$(sha256sum <$dir/download | cut -c1-64)"
    timeout 150 nc -l -p 7001 -e sh -c "cat >$dir/upload" </dev/null >/dev/null 2>&1 &
    up_pid=$!
    timeout 150 nc -l -p 7002 -e cat $dir/download </dev/null >/dev/null 2>&1 &
    down_pid=$!

    # vsock: an echo server for the guest's call to port 5001, and a call of the guest's
    # port 5000, retried until its listener is up.
    timeout 150 vsock-echo serve unix:$dir/vsock_5001 >$dir/vsock-served 2>&1 &
    served_pid=$!
    timeout 150 vsock-echo call unix:$dir/vsock:5000 1048576 140 >$dir/vsock-call 2>&1 &
    call_pid=$!

    scenario "$name" "$@" \
        --disk $dir/vda.img,serial=mvdisk0rw --disk $dir/vdb.img,ro,serial=mvdisk1ro \
        --net tap=mvtap0,mac=52:54:00:4d:56:02 --rng \
        --virtio-console file:$dir/hvc0.log --vsock cid=3,socket=$dir/vsock

    kill $up_pid $down_pid $served_pid $call_pid 2>/dev/null
    wait $up_pid $down_pid $served_pid $call_pid 2>/dev/null
    echo "MONOVIRT-L1-DEV-DISKS-AFTER" \
        "vda_first_sha=$(dd if=$dir/vda.img bs=1048576 count=1 2>/dev/null | sha256sum | cut -c1-64)" \
        "vda_written_sha=$(dd if=$dir/vda.img bs=1048576 skip=2 count=1 2>/dev/null | sha256sum | cut -c1-64)" \
        "vda_discarded_sha=$(dd if=$dir/vda.img bs=1048576 skip=3 count=1 2>/dev/null | sha256sum | cut -c1-64)" \
        "zero_mib_sha=$(dd if=/dev/zero bs=1048576 count=1 2>/dev/null | sha256sum | cut -c1-64)" \
        "vdb_sha=$(sha256sum <$dir/vdb.img | cut -c1-64)"
    echo "MONOVIRT-L1-DEV-NET-AFTER upload_bytes=$(stat -c %s $dir/upload 2>/dev/null)" \
        "upload_sha=$(sha256sum <$dir/upload 2>/dev/null | cut -c1-64)"
    echo "MONOVIRT-L1-DEV-HVC0 $(cat $dir/hvc0.log 2>/dev/null)"
    echo "MONOVIRT-L1-DEV-VSOCK-SERVED $(cat $dir/vsock-served)"
    echo "MONOVIRT-L1-DEV-VSOCK-CALL $(cat $dir/vsock-call)"
    ip link delete mvtap0 2>/dev/null || tunctl -d mvtap0 >/dev/null
    umount $dir
}

if [ -f /etc/scenarios.sh ]; then
    . /etc/scenarios.sh
fi

echo "MONOVIRT-L1-DONE"
poweroff -f
