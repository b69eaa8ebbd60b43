#!/bin/busybox sh
# /init of the L1 host of the real-Linux test tier: the Debian cloud kernel under QEMU
# (TCG, an EPYC CPU with SVM and NPT). It loads that kernel's own irqbypass, kvm and
# kvm_amd modules, which gives a real kvm_amd /dev/kvm with nested paging, then runs the
# scenarios the test put in /etc/scenarios.sh, each one `monovirt run` of an L2 guest.
# Every line it reports starts with MONOVIRT-L1-; the L2 guests' own lines (MONOVIRT-L2-)
# appear between a scenario's BEGIN and END lines.

/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# The initramfs has no /dev/console node, so the kernel could not give init a console:
# take it now that devtmpfs is mounted.
exec </dev/console >/dev/console 2>&1

echo "MONOVIRT-L1-INIT-OK kernel=$(uname -r) cpus=$(nproc)"

for module in $(cat /etc/modules); do
    insmod "$module" || echo "MONOVIRT-L1-INSMOD-FAILED module=${module##*/}"
done

if [ -c /dev/kvm ] && [ -d /sys/module/kvm_amd ]; then
    echo "MONOVIRT-L1-KVM-OK npt=$(cat /sys/module/kvm_amd/parameters/npt)" \
        "nested=$(cat /sys/module/kvm_amd/parameters/nested)"
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
# timeout monovirt gets SIGKILL, which it cannot handle, so rc=137 means exactly that.
SCENARIO_TIMEOUT=180
scenario() {
    name=$1
    shift
    echo "MONOVIRT-L1-SCENARIO-BEGIN name=$name"
    start=$(cut -d' ' -f1 /proc/uptime)
    timeout -s KILL "$SCENARIO_TIMEOUT" monovirt run "$@" </dev/null
    rc=$?
    end=$(cut -d' ' -f1 /proc/uptime)
    printf '\nMONOVIRT-L1-SCENARIO-END name=%s rc=%s start=%s end=%s\n' "$name" "$rc" "$start" "$end"
}

if [ -f /etc/scenarios.sh ]; then
    . /etc/scenarios.sh
fi

echo "MONOVIRT-L1-DONE"
poweroff -f
