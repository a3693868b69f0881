#!/usr/bin/env bash
# `make demo`: ferrolb end to end on this machine.
#
# Brings up a lab (3 nodes with kube-proxy and a client, all network namespaces), installs the Helm chart
# into its real API server, runs the controller and one speaker per node as processes authenticated with
# the chart's ServiceAccounts (the lab has no kubelet, so pods cannot run), applies the example pool,
# creates a backend and a LoadBalancer Service, and shows the Service answering from the client.
# The lab keeps running afterwards; the last lines say how to look around and how to tear it down.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LAB="$ROOT/target/debug/ferrolb-lab"
NS=ferrolb-system

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

say "Bringing up a lab: etcd, kube-apiserver, kube-controller-manager, 3 nodes with kube-proxy, a client"
eval "$("$LAB" up --nodes 3 --kube-proxy)"
RUN="${XDG_RUNTIME_DIR:-/tmp}/ferrolb-lab/$FERROLB_LAB"
run kubectl get nodes -o wide

say "Installing the chart (CRDs, RBAC, controller Deployment, speaker DaemonSet)"
run helm install ferrolb charts/ferrolb --namespace "$NS" --create-namespace
run kubectl -n "$NS" get deployment,daemonset,serviceaccount,lease

# Kubeconfigs that authenticate as the chart's ServiceAccounts, so its RBAC is what the processes get.
CTRL_SA=$(kubectl -n "$NS" get deploy -l app.kubernetes.io/component=controller -o jsonpath='{.items[0].spec.template.spec.serviceAccountName}')
SPK_SA=$(kubectl -n "$NS" get ds -l app.kubernetes.io/component=speaker -o jsonpath='{.items[0].spec.template.spec.serviceAccountName}')
CTRL_KC=$("$LAB" sa-kubeconfig -n "$NS" "$CTRL_SA")
SPK_KC=$("$LAB" sa-kubeconfig -n "$NS" "$SPK_SA")

say "Starting the controller (leader election on) and a speaker on each node, as the chart's ServiceAccounts"
"$LAB" spawn --log controller cp -- "$ROOT/target/debug/ferrolb-controller" \
    --kubeconfig "$CTRL_KC" --leader-elect --lease-namespace "$NS" --metrics-addr 127.0.0.1:7472 >/dev/null
for i in 1 2 3; do
    "$LAB" spawn --log "speaker-node-$i" "node-$i" -- "$ROOT/target/debug/ferrolb-speaker" \
        --node-name "node-$i" --kubeconfig "$SPK_KC" --metrics-addr "198.51.100.1$i:7473" >/dev/null
done

say "Applying the example IPAddressPool and L2Advertisement"
run kubectl apply -f examples/pool.yaml

say "A backend (a web server on node-1 and node-2) and a LoadBalancer Service in front of it"
kubectl create namespace demo >/dev/null
kubectl apply -f - >/dev/null <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: hello, namespace: demo}
spec:
  replicas: 2
  selector: {matchLabels: {app: hello}}
  template:
    metadata: {labels: {app: hello}}
    spec:
      containers: [{name: web, image: registry.example/hello:1, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: hello, namespace: demo}
spec:
  type: LoadBalancer
  selector: {app: hello}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
# No kubelet runs in the lab, so the Deployment's pods never start; the web servers run as processes
# in the node namespaces and this EndpointSlice points the Service at them, as the pods' would.
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: hello-lab
  namespace: demo
  labels: {kubernetes.io/service-name: hello, endpointslice.kubernetes.io/managed-by: ferrolb-lab}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
  - {addresses: [198.51.100.11], nodeName: node-1, conditions: {ready: true, serving: true}}
  - {addresses: [198.51.100.12], nodeName: node-2, conditions: {ready: true, serving: true}}
YAML
for i in 1 2; do
    "$LAB" spawn --log "backend-node-$i" "node-$i" -- "$LAB" http-backend --listen "198.51.100.1$i:8080" --text "hello from node-$i" >/dev/null
done

IP=""
for _ in $(seq 1 100); do
    IP=$(kubectl -n demo get svc hello -o jsonpath='{.status.loadBalancer.ingress[0].ip}' 2>/dev/null || true)
    [[ -n "$IP" ]] && break
    sleep 0.1
done
[[ -n "$IP" ]] || { echo "the Service got no IP; see $RUN/logs/controller.log" >&2; exit 1; }

say "kubectl get svc: the Service has its EXTERNAL-IP"
run kubectl -n demo get svc hello
say "kubectl get ipaddresspools,l2advertisements: usage, and what is announced"
sleep 1
run kubectl get ipaddresspools
run kubectl get l2advertisements

say "Which node announces $IP"
ANN=""
for _ in $(seq 1 100); do
    ANN=$(kubectl -n demo get svc hello -o jsonpath='{.status.conditions[?(@.type=="ferrolb.io/Announced")].message}' 2>/dev/null || true)
    [[ -n "$ANN" ]] && break
    sleep 0.1
done
echo "${ANN:-(no announcer condition yet; see $RUN/logs/speaker-node-*.log)}"
"$LAB" kubectl -- get nodes -o custom-columns=NODE:.metadata.name,IP:.status.addresses[0].address --no-headers |
    while read -r n a; do echo "  $n $a $("$LAB" exec "$n" -- cat /sys/class/net/eth0/address)"; done

say "The client resolves $IP with ARP"
run "$LAB" exec client -- arping -c 2 -w 5 -I eth0 "$IP"

say "The client fetches a page through $IP (LAN → announcing node → kube-proxy → backend)"
run "$LAB" exec client -- curl -s --max-time 5 "http://$IP/"

cat <<EOF2

The lab $FERROLB_LAB keeps running. To look around:
  eval "\$($LAB env)"            # KUBECONFIG, kubectl and helm on PATH
  kubectl get svc -A; kubectl get ipaddresspools; kubectl describe svc -n demo hello
  $LAB exec client -- curl http://$IP/
  less $RUN/logs/controller.log $RUN/logs/speaker-node-1.log
To tear it down:
  make lab-down                   # or: $LAB down $FERROLB_LAB
EOF2
