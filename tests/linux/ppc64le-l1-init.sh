#!/bin/busybox sh
# /init of the L1 host of the nested ppc64le KVM tier (tests/ppc64le_tier.rs): the Debian
# ppc64el kernel under QEMU's pseries machine (TCG, POWER9, cap-nested-hv=on). It loads
# that kernel's own kvm and kvm_hv modules, which gives a KVM-HV /dev/kvm running its
# guests through the nested-HV interface, then runs the scenarios the test put in
# /etc/scenarios.sh, each one `monovirt run` (cross-built for ppc64le) of an L2 guest.
# Every line it reports starts with MONOVIRT-L1-; the L2 guests' own lines appear between
# a scenario's BEGIN and END lines.

/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1

echo "MONOVIRT-L1-INIT-OK kernel=$(uname -r) cpus=$(nproc) machine=$(uname -m)"

for module in $(cat /etc/modules); do
    insmod "$module" || echo "MONOVIRT-L1-INSMOD-FAILED module=${module##*/}"
done

if [ -c /dev/kvm ] && [ -d /sys/module/kvm_hv ]; then
    echo "MONOVIRT-L1-KVM-OK hv=1"
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

# `scenario NAME ARGS...` runs `monovirt run ARGS...`, bounded by SCENARIO_TIMEOUT seconds,
# between lines that name it and give its exit code (137: killed at the timeout).
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
