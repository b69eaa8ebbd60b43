#!/usr/bin/env bash
# The main job on a fresh Debian machine: install what is needed, build, start the
# daemon, store a VirtualMachine through the REST API, and boot a VM on KVM.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build --release --locked --bin monovirt
cargo build --release --locked --target x86_64-unknown-none \
    --manifest-path tests/guest/Cargo.toml
bin=target/release/monovirt
guest=tests/guest/target/x86_64-unknown-none/release/monovirt-test-guest

data=$(mktemp -d /tmp/monovirt-demo.XXXXXX)
log="$data/serve.log"
"$bin" serve --data-dir "$data" --listen 127.0.0.1:0 >"$data/serve.out" 2>"$log" &
serve_pid=$!
trap 'kill "$serve_pid" 2>/dev/null || true; wait "$serve_pid" 2>/dev/null || true' EXIT

for _ in $(seq 100); do
    grep -q '^listening on ' "$data/serve.out" 2>/dev/null && break
    sleep 0.1
done
url=$(sed -n 's/^listening on //p' "$data/serve.out")
[ -n "$url" ] || { echo "demo: the daemon did not start; see $log" >&2; exit 1; }
echo "== monovirt serve is up at $url (data in $data)"

echo "== import the project's test guest as an image (its kernel at /boot/vmlinux)"
"$bin" image import --data-dir "$data" monovirt/test-guest "$guest" --dest /boot/vmlinux

echo "== POST a KubeVirt VirtualMachine that boots it (runStrategy Always)"
curl -sS -f -X POST "$url/apis/kubevirt.io/v1/namespaces/default/virtualmachines" \
    -H 'Content-Type: application/yaml' --data-binary @- >/dev/null <<'YAML'
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: demo
spec:
  runStrategy: Always
  template:
    spec:
      terminationGracePeriodSeconds: 5
      domain:
        cpu:
          cores: 2
        memory:
          guest: 256Mi
        firmware:
          kernelBoot:
            kernelArgs: console=ttyS0 tick
            container:
              image: monovirt/test-guest
              kernelPath: /boot/vmlinux
        devices:
          autoattachPodInterface: false
YAML

vmi="$url/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances/demo"
for _ in $(seq 600); do
    curl -sS "$vmi" 2>/dev/null | grep -q '"phase":"Running"' && break
    sleep 0.1
done
kubectl --server "$url" get nodes
kubectl --server "$url" get vms,vmis

echo "== its serial console for 3 seconds (the guest's report, then its ticks; first lines)"
sleep 3 | "$bin" console --server "$url" demo 2>/dev/null | head -n 20 || true

echo "== stop it: the VMI goes, the VM is Stopped"
"$bin" stop --server "$url" demo
for _ in $(seq 600); do
    [ "$(curl -sS -o /dev/null -w '%{http_code}' "$vmi")" = 404 ] && break
    sleep 0.1
done
kubectl --server "$url" get vms

echo "== delete it"
"$bin" delete --server "$url" vm demo
echo "== done"
