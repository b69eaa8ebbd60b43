#!/bin/busybox sh
# The orchestrated path of the real-Linux tier, run by L1's init as one scenario:
# `monovirt serve` (API, controllers, scheduler and its local node agent on L1's real
# kvm_amd), the Debian kernel and the L2 initramfs imported as an image, a VM POSTed over
# the REST API (`monovirt apply`) that boots them through kernelBoot, its VMI Running,
# and its serial console read back through the console subresource: the L2 init's marker
# and a command typed into the L2 shell, answered.
#
# Usage: l1-serve.sh VM_NAME MANIFEST
# MANIFEST is the VirtualMachine the test wrote (YAML): it boots image
# monovirt/debian-l2:1 by kernelBoot with the L2 task on its kernel command line. It
# prints MONOVIRT-L1-SERVE-* lines (and the console between CONSOLE-BEGIN and
# CONSOLE-END); tests/linux_tier.rs checks them.

name=$1
manifest=$2
data=/var/lib/monovirt
server=http://127.0.0.1:8080
export MONOVIRT_SERVER=$server

fail() {
    echo "MONOVIRT-L1-SERVE-FAILED step=$1"
    echo "--- last client error"
    cat /tmp/client.err 2>/dev/null
    echo "--- serve log (tail)"
    tail -n 40 /tmp/serve.log
    exit 1
}

# L1's init brings no network up; the API and the node endpoint are on loopback.
ip link set lo up || fail loopback

# The image: KubeVirt's kernelBoot layout, kernel and initrd under /boot.
mkdir -p /tmp/l2-image/boot "$data"
cp /l2/vmlinuz /tmp/l2-image/boot/vmlinuz || fail copy-kernel
cp /l2/initrd.cpio.gz /tmp/l2-image/boot/initrd.cpio.gz || fail copy-initrd
monovirt image import --data-dir "$data" monovirt/debian-l2:1 /tmp/l2-image >/dev/null \
    || fail image-import

monovirt serve --config /dev/null --listen 127.0.0.1:8080 --data-dir "$data" \
    --node-name l1 >/tmp/serve.out 2>/tmp/serve.log &
serve=$!
i=0
until grep -q "listening on http://" /tmp/serve.out 2>/dev/null; do
    i=$((i + 1))
    [ $i -lt 600 ] || fail serve-listening
    kill -0 $serve 2>/dev/null || fail serve-exited
    usleep 100000
done
echo "MONOVIRT-L1-SERVE-LISTENING"

i=0
until monovirt apply -f "$manifest" >/dev/null 2>/tmp/client.err; do
    i=$((i + 1))
    [ $i -lt 100 ] || fail apply
    usleep 200000
done
echo "MONOVIRT-L1-SERVE-POSTED"

i=0
until monovirt get vmi "$name" -o json 2>/tmp/client.err | grep -q '"phase": *"Running"'; do
    i=$((i + 1))
    [ $i -lt 600 ] || fail vmi-running
    usleep 200000
done
monovirt get vmi "$name" -o json >/tmp/vmi.json 2>/tmp/client.err || fail vmi-get
# `-o json` indents by two spaces: metadata.uid is the one "uid" four spaces in.
node=$(sed -n 's/.*"nodeName": *"\([^"]*\)".*/\1/p' /tmp/vmi.json | head -n 1)
uid=$(sed -n 's/^    "uid": *"\([^"]*\)".*/\1/p' /tmp/vmi.json | head -n 1)
echo "MONOVIRT-L1-SERVE-RUNNING node=$node uid=$uid"

# The console: wait for the L2 shell (after whatever the L2 task printed first), type a
# command whose answer differs from its echo, keep the session open until the answer is
# there.
: >/tmp/console.out
(
    i=0
    until grep -q "MONOVIRT-L2-SHELL-READY" /tmp/console.out; do
        i=$((i + 1))
        [ $i -lt 1200 ] || break
        usleep 100000
    done
    # The marker comes just before the shell starts; typed input waits in the tty.
    usleep 500000
    printf 'echo MONOVIRT-L2-ECHO-$((6 * 7))\n'
    i=0
    until grep -q "MONOVIRT-L2-ECHO-42" /tmp/console.out; do
        i=$((i + 1))
        [ $i -lt 300 ] || break
        usleep 100000
    done
) | monovirt console "$name" >/tmp/console.out 2>/dev/null
echo "MONOVIRT-L1-SERVE-CONSOLE-BEGIN"
tr -d '\r' </tmp/console.out
echo
echo "MONOVIRT-L1-SERVE-CONSOLE-END"

monovirt delete vm "$name" >/dev/null || fail delete
i=0
while monovirt get vmi "$name" >/dev/null 2>&1; do
    i=$((i + 1))
    [ $i -lt 600 ] || fail vmi-deleted
    usleep 200000
done
echo "MONOVIRT-L1-SERVE-DELETED"
kill -TERM $serve
wait $serve
echo "MONOVIRT-L1-SERVE-STOPPED rc=$?"
