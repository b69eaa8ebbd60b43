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
#   shell     an interactive shell on the console, for debugging by hand

/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# The initramfs has no /dev/console node, so the kernel could not give init a console:
# take it now that devtmpfs is mounted.
exec </dev/console >/dev/console 2>&1

task=
for arg in $(cat /proc/cmdline); do
    case $arg in
    monovirt.task=*) task=${arg#monovirt.task=} ;;
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
shell)
    exec setsid cttyhack sh
    ;;
*)
    echo "MONOVIRT-L2-TASK-UNKNOWN task=$task"
    poweroff -f
    ;;
esac

# poweroff -f and reboot -f do not return; if they do, say so and stop here.
echo "MONOVIRT-L2-HALT-FAILED task=$task"
while true; do sleep 3600; done
