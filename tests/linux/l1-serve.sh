#!/bin/busybox sh
# The orchestrated path of the real-Linux tier, run by L1's init as one scenario:
# `monovirt serve` (API, controllers, scheduler and its local node agent on L1's real
# kvm_amd), the Debian kernel and the L2 initramfs imported as an image, a VM POSTed over
# the REST API (`monovirt apply`) that boots them through kernelBoot, its VMI Running,
# and its serial console read back through the console subresource: the L2 init's marker
# and a command typed into the L2 shell, answered.
#
# Usage: l1-serve.sh VM_NAME MANIFEST [network]
# MANIFEST is the VirtualMachine the test wrote (YAML): it boots image
# monovirt/debian-l2:1 by kernelBoot with the L2 task on its kernel command line. It
# prints MONOVIRT-L1-SERVE-* lines (and the console between CONSOLE-BEGIN and
# CONSOLE-END); tests/linux_tier.rs checks them.
#
# With `network`, the daemon runs with `--network` (the default network: bridge, DHCP,
# masquerade NAT; the manifest puts the VM on it), and an "outside" namespace behind
# L1's uplink serves pages for the L2 guest to fetch through the NAT: a busybox httpd
# with a page of this run's token and a CGI that answers the client address it saw.

name=$1
manifest=$2
network=$3
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

# The outside network: a namespace (a busybox `unshare -n` process) joined to L1 by a
# veth whose L1 end is the uplink 198.51.100.2/24 the NAT leaves by, with the HTTP
# server at 198.51.100.1:80.
serve_network=
if [ "$network" = network ]; then
    serve_network=--network
    www=/tmp/www
    mkdir -p $www/cgi-bin
    token=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
    echo "monovirt-page-$token" >$www/index.html
    cat >$www/cgi-bin/remote <<'EOF'
#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n%s\n' "$REMOTE_ADDR"
EOF
    chmod 755 $www/cgi-bin/remote
    unshare -n sleep 100000 </dev/null >/dev/null 2>&1 &
    outside=$!
    i=0
    while [ "$(readlink /proc/$outside/ns/net)" = "$(readlink /proc/self/ns/net)" ]; do
        i=$((i + 1))
        [ $i -lt 100 ] || fail outside-namespace
        usleep 50000
    done
    ip link add mvup0 type veth || fail veth
    # (busybox names the peer itself.)
    peer=$(ip -o link show | sed -n 's/^[0-9]*: \([^@:]*\)@mvup0.*/\1/p')
    ip link set "$peer" netns $outside || fail veth-netns
    nsenter -t $outside -n ip link set "$peer" name eth0 &&
        nsenter -t $outside -n ip addr add 198.51.100.1/24 dev eth0 &&
        nsenter -t $outside -n ip link set eth0 up &&
        nsenter -t $outside -n ip link set lo up || fail outside-address
    ip addr add 198.51.100.2/24 dev mvup0 && ip link set mvup0 up || fail uplink-address
    nsenter -t $outside -n httpd -f -vv -p 198.51.100.1:80 -h $www 2>/tmp/httpd.log &
    httpd=$!
    echo "MONOVIRT-L1-SERVE-NET-OUTSIDE server=198.51.100.1 uplink=198.51.100.2 token=$token"
fi

# The image: KubeVirt's kernelBoot layout, kernel and initrd under /boot.
mkdir -p /tmp/l2-image/boot "$data"
cp /l2/vmlinuz /tmp/l2-image/boot/vmlinuz || fail copy-kernel
cp /l2/initrd.cpio.gz /tmp/l2-image/boot/initrd.cpio.gz || fail copy-initrd
monovirt image import --data-dir "$data" monovirt/debian-l2:1 /tmp/l2-image >/dev/null \
    || fail image-import

monovirt serve --config /dev/null --listen 127.0.0.1:8080 --data-dir "$data" \
    --node-name l1 $serve_network >/tmp/serve.out 2>/tmp/serve.log &
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
ip=$(sed -n 's/.*"ipAddress": *"\([^"]*\)".*/\1/p' /tmp/vmi.json | head -n 1)
echo "MONOVIRT-L1-SERVE-RUNNING node=$node uid=$uid ip=${ip:-none}"

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
if [ "$network" = network ]; then
    # The VMI's tap (named mvt...) went with it; what the outside server logged.
    echo "MONOVIRT-L1-SERVE-NET-RELEASED taps=$(ip -o link show | grep -c ': mvt')"
    echo "--- httpd log"
    cat /tmp/httpd.log
    kill $httpd $outside 2>/dev/null
fi
kill -TERM $serve
wait $serve
echo "MONOVIRT-L1-SERVE-STOPPED rc=$?"
