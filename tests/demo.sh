#!/usr/bin/env bash
# `make demo`: ferrolb end to end on this machine.
#
# Brings up a lab with real nodes (3 nodes, each with containerd, a kubelet and kube-proxy in its own
# network namespace, plus a client on the same LAN), packs the workspace's ferrolb binaries into the
# image the chart names and imports it on every node, installs the Helm chart (its controller
# Deployment and speaker DaemonSet run as pods), applies the example pool, runs a backend Deployment
# behind a LoadBalancer Service (Kubernetes writes its EndpointSlices), and shows the Service
# answering from the client with the name of the pod that served it. Then forwarder mode: a pool of
# the nodes' own addresses and a second Service of the same backend from it, published on every
# node's InternalIP (kube-proxy forwards), with its ForwarderReady condition and a page fetched
# through each node address.
# The lab keeps running afterwards; the last lines say how to look around and how to tear it down.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# `make build` puts the binaries here (cargo's target directory, `target/` unless overridden).
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET/debug"
LAB="$BIN/ferrolb-lab"
NS=ferrolb-system
# Bounds for pods to be scheduled, started and Ready on a busy machine.
ROLLOUT_TIMEOUT=180s
# The forwarder Service's port: clear of the deny-list (forwarder.denyPorts), the speakers' own ports
# and the first Service's 80. Its node addresses are awaited up to FWD_WAIT_STEPS half-seconds.
FWD_PORT=8088
FWD_WAIT_STEPS=120

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

say "Packing the ferrolb image (the debug binaries of \`make build\`) for the lab's nodes"
IMAGE=$("$LAB" image --bin-dir "$BIN" --out "$TARGET/lab-images/ferrolb-debug.oci.tar")
ls -lh "$IMAGE" | awk '{print $5, $9}'

say "Bringing up a lab: etcd, kube-apiserver, controller-manager, scheduler, 3 real nodes with kube-proxy, a client"
eval "$("$LAB" up --nodes 3 --kube-proxy --image "$IMAGE")"
RUN="$FERROLB_LAB_RUN_DIR"
# On a failure the lab stays up for a look; say how to remove it.
trap 'rc=$?; [[ $rc -eq 0 ]] || echo "demo failed (exit $rc); the lab $FERROLB_LAB is left up: eval \"\$($LAB env $FERROLB_LAB)\" to look, $LAB down $FERROLB_LAB to remove it" >&2' EXIT
run kubectl get nodes -o wide

say "Installing the chart: CRDs, RBAC, the controller Deployment and the speaker DaemonSet"
# The image is imported on every node and no registry is reachable: never pull.
run helm install ferrolb charts/ferrolb --namespace "$NS" --create-namespace --set image.pullPolicy=Never
run kubectl -n "$NS" rollout status deployment/ferrolb-controller --timeout="$ROLLOUT_TIMEOUT"
run kubectl -n "$NS" rollout status daemonset/ferrolb-speaker --timeout="$ROLLOUT_TIMEOUT"
run kubectl -n "$NS" get deployment,daemonset,lease

say "Applying the example IPAddressPool and L2Advertisement"
run kubectl apply -f examples/pool.yaml

say "A backend (2 pods of the lab's backend image) and a LoadBalancer Service in front of it"
kubectl create namespace demo >/dev/null
kubectl apply -f - <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: hello, namespace: demo}
spec:
  replicas: 2
  selector: {matchLabels: {app: hello}}
  template:
    metadata: {labels: {app: hello}}
    spec:
      topologySpreadConstraints:
        - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: hello}}}
      containers:
        - name: web
          image: ferrolb.local/backend:lab
          imagePullPolicy: Never
          # The backend answers with its pod's and node's names and the address it saw.
          env:
            - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
            - {name: NODE_NAME, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
          ports: [{name: http, containerPort: 8080}]
          readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: hello, namespace: demo}
spec:
  type: LoadBalancer
  selector: {app: hello}
  ports: [{name: http, port: 80, targetPort: 8080}]
YAML
run kubectl -n demo rollout status deployment/hello --timeout="$ROLLOUT_TIMEOUT"

say "kubectl get pods -A -o wide: every pod runs on the lab's nodes"
run kubectl get pods -A -o wide
NOT_RUNNING=$(kubectl get pods -A --no-headers -o custom-columns=NS:.metadata.namespace,NAME:.metadata.name,PHASE:.status.phase | awk '$3 != "Running"')
[[ -z "$NOT_RUNNING" ]] || { echo "pods not Running:" >&2; echo "$NOT_RUNNING" >&2; exit 1; }

say "Kubernetes wrote the Service's EndpointSlice from the backend pods"
run kubectl -n demo get endpointslices -l kubernetes.io/service-name=hello -o wide

IP=""
for _ in $(seq 1 100); do
    IP=$(kubectl -n demo get svc hello -o jsonpath='{.status.loadBalancer.ingress[0].ip}' 2>/dev/null || true)
    [[ -n "$IP" ]] && break
    sleep 0.1
done
[[ -n "$IP" ]] || { echo "the Service got no IP; see kubectl -n $NS logs deploy/ferrolb-controller" >&2; exit 1; }

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
echo "${ANN:-(no announcer condition yet; see kubectl -n $NS logs ds/ferrolb-speaker)}"
kubectl get nodes -o custom-columns=NODE:.metadata.name,IP:.status.addresses[0].address --no-headers |
    while read -r n a; do echo "  $n $a $("$LAB" exec "$n" -- cat /sys/class/net/eth0/address)"; done

say "The client resolves $IP with ARP"
run "$LAB" exec client -- arping -c 2 -w 5 -I eth0 "$IP"

say "The client fetches a page through $IP (LAN → announcing node → kube-proxy → a backend pod)"
for _ in 1 2 3 4; do
    run "$LAB" exec client -- curl -s --max-time 5 "http://$IP/"
done

say "Forwarder mode: a second pool, made of the nodes' own addresses (no spare addresses needed)"
# autoAssign false: only Services that ask for it by name get node addresses.
NODE_POOL=nodes
NODE_POOL_YAML="apiVersion: ferrolb.io/v1beta1
kind: IPAddressPool
metadata: {name: $NODE_POOL}
spec:
  nodeAddresses: {addressType: InternalIP}
  autoAssign: false"
echo "$NODE_POOL_YAML"
kubectl apply -f - <<<"$NODE_POOL_YAML"

say "A second LoadBalancer Service of the same backend, on port $FWD_PORT, from the node pool"
kubectl apply -f - <<YAML
apiVersion: v1
kind: Service
metadata:
  name: hello-nodes
  namespace: demo
  annotations: {ferrolb.io/address-pool: $NODE_POOL}
spec:
  type: LoadBalancer
  selector: {app: hello}
  ports: [{name: http, port: $FWD_PORT, targetPort: 8080}]
YAML

# Every node is eligible here, so wait for all of them (each speaker checks the port on its node
# every 2 s, then the controller publishes); fewer than all is shown, none is a failure.
NODE_IPS=$(kubectl get nodes -o jsonpath='{range .items[*]}{.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}' | tr ' ' '\n' | grep -v : | sort | xargs)
FWD_IPS=""
for _ in $(seq 1 "$FWD_WAIT_STEPS"); do
    FWD_IPS=$(kubectl -n demo get svc hello-nodes -o jsonpath='{range .status.loadBalancer.ingress[*]}{.ip}{"\n"}{end}' 2>/dev/null | sort | xargs || true)
    [[ "$FWD_IPS" == "$NODE_IPS" ]] && break
    sleep 0.5
done
FWD_COND=$(kubectl -n demo get svc hello-nodes -o jsonpath='{range .status.conditions[?(@.type=="ferrolb.io/ForwarderReady")]}{.type}={.status} {.reason}: {.message}{end}' 2>/dev/null || true)
if [[ -z "$FWD_IPS" ]]; then
    echo "the forwarder Service got no node addresses within $((FWD_WAIT_STEPS / 2)) s (nodes: $NODE_IPS)" >&2
    echo "its condition: ${FWD_COND:-(none)}" >&2
    echo "see kubectl get forwardernodes; kubectl -n $NS logs deploy/ferrolb-controller" >&2
    exit 1
fi
[[ "$FWD_IPS" == "$NODE_IPS" ]] || echo "(only $FWD_IPS of the nodes' $NODE_IPS published within $((FWD_WAIT_STEPS / 2)) s)"

say "kubectl get svc: the L2 Service on its pool's IP, the forwarder one on the nodes' own addresses"
run kubectl -n demo get svc
say "Why these nodes: the Service's ferrolb.io/ForwarderReady condition, and each node's port check"
echo "$FWD_COND"
run kubectl get forwardernodes
run kubectl get ipaddresspools

# kube-proxy on each node turns the published addresses into rules within a sync; bounded wait for
# the first answer, then one request per published node address.
FWD_IP=${FWD_IPS%% *}
OK=""
for _ in $(seq 1 30); do
    if "$LAB" exec client -- curl -s --max-time 2 -o /dev/null "http://$FWD_IP:$FWD_PORT/"; then OK=1; break; fi
    sleep 0.5
done
[[ -n "$OK" ]] || { echo "http://$FWD_IP:$FWD_PORT/ did not answer the client within ~75 s; see kubectl get svc -n demo hello-nodes -o yaml" >&2; exit 1; }

say "The client fetches a page through each node's own address (LAN → that node → kube-proxy → a backend pod)"
for ip in $FWD_IPS; do
    printf '$ %s\n' "$LAB exec client -- curl -s --max-time 5 http://$ip:$FWD_PORT/"
    BODY=$("$LAB" exec client -- curl -s --max-time 5 "http://$ip:$FWD_PORT/") || BODY=""
    echo "$BODY"
    [[ "$BODY" == pod=* ]] || { echo "http://$ip:$FWD_PORT/ gave no answer from a backend pod" >&2; exit 1; }
done

cat <<EOF2

The lab $FERROLB_LAB keeps running. To look around:
  eval "\$($LAB env)"            # KUBECONFIG, kubectl and helm on PATH
  kubectl get pods -A -o wide; kubectl get ipaddresspools; kubectl describe svc -n demo hello
  kubectl -n $NS logs deploy/ferrolb-controller; kubectl -n $NS logs ds/ferrolb-speaker
  $LAB exec client -- curl http://$IP/; $LAB exec client -- curl http://$FWD_IP:$FWD_PORT/
  ls $RUN/nodes/*/pod-logs       # every container's log, as the kubelets wrote it
To tear it down:
  make lab-down                   # or: $LAB down $FERROLB_LAB
EOF2
