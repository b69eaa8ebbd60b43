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

echo "== POST a KubeVirt VirtualMachine"
curl -sS -f -X POST "$url/apis/kubevirt.io/v1/namespaces/default/virtualmachines" \
    -H 'Content-Type: application/yaml' --data-binary @- >/dev/null <<'YAML'
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: demo
spec:
  runStrategy: Halted
  template:
    spec:
      domain:
        cpu:
          cores: 2
        memory:
          guest: 256Mi
        devices: {}
YAML
kubectl --server "$url" get vms

echo "== boot a VM on KVM: 2 vCPUs, 256 MiB, the project's test guest on COM1"
"$bin" run --kernel "$guest" --cmdline "console=ttyS0 poweroff" --cpus 2 --memory 256
echo "== the guest powered off cleanly"
