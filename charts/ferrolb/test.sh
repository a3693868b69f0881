#!/usr/bin/env bash
# Chart test for charts/ferrolb: lints and renders the chart with its defaults and with
# ci/everything-values.yaml, checks key facts of the rendered objects, that values.schema.json
# and the chart's own checks reject bad values with a message, that the CRDs are rendered
# unchanged from the generated file, and that the README's RBAC table matches the roles.
#
# Needs helm only (no cluster): $HELM, else the lab's build, else `helm` on PATH.
# Prints one line per check and "N passed, M failed" last; exits non-zero on any failure.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
chart=$here

if [[ -z "${HELM:-}" ]]; then
    for candidate in "$HOME"/.cache/ferrolb/tools/k8s-*-helm-*/bin/helm; do
        [[ -x "$candidate" ]] && HELM=$candidate
    done
fi
HELM=${HELM:-$(command -v helm || true)}
if [[ -z "$HELM" || ! -x "$HELM" ]]; then
    echo "test.sh: no helm found (set HELM, or build the lab tools with tests/lab/scripts/build-tools.sh)" >&2
    echo "0 passed, 1 failed"
    exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# shellcheck source=../../tests/lib/checks.sh
source "$repo/tests/lib/checks.sh"

# render OUT [helm template args...]: renders into $tmp/OUT.yaml, stderr into $tmp/OUT.err.
render() {
    local out=$1
    shift
    "$HELM" template t "$chart" --namespace ferrolb-system "$@" >"$tmp/$out.yaml" 2>"$tmp/$out.err"
}

# doc FILE KIND [NAME]: prints the rendered documents of that kind (and metadata.name).
doc() {
    awk -v kind="$2" -v name="${3:-}" '
        function flush() {
            if (k == kind && (name == "" || n == name)) printf "%s", buf
            buf = ""; k = ""; n = ""; inmeta = 0
        }
        /^---/ { flush(); next }
        {
            buf = buf $0 "\n"
            if ($0 ~ /^kind: /) { k = substr($0, 7) }
            if ($0 ~ /^metadata:/) { inmeta = 1; next }
            if (inmeta && $0 ~ /^  name: /) { n = substr($0, 9); inmeta = 0 }
            if ($0 ~ /^[a-z]/) { inmeta = 0 }
        }
        END { flush() }
    ' "$1"
}

# list_under KEY: from a container securityContext on stdin, the items of the list KEY
# (capabilities.add or .drop), one per line.
list_under() {
    awk -v key="$1" '
        $0 ~ "^ *" key ":" { on = 1; ind = match($0, /[^ ]/); next }
        on {
            i = match($0, /[^ ]/)
            if ($0 ~ /^ *- / && i >= ind) { sub(/^ *- */, ""); print; next }
            on = 0
        }
    '
}

export -f list_under doc
has() { grep -q -- "$2" <<<"$1"; }
hasnt() { ! grep -q -- "$2" <<<"$1"; }

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n 1)

echo "# helm: $HELM ($("$HELM" version --short 2>/dev/null))"

# --- Chart metadata -------------------------------------------------------------------------
check "Chart.yaml version and appVersion equal the Cargo workspace version ($version)" \
    bash -c "grep -qx 'version: $version' '$chart/Chart.yaml' && grep -qx 'appVersion: \"$version\"' '$chart/Chart.yaml'"
check "the CRD subchart is named ferrolb-crds with the same version" \
    bash -c "grep -qx 'name: ferrolb-crds' '$chart/charts/crds/Chart.yaml' && grep -qx 'version: $version' '$chart/charts/crds/Chart.yaml'"

# --- Lint -----------------------------------------------------------------------------------
if out=$("$HELM" lint --strict "$chart" 2>&1); then ok "helm lint --strict (defaults)"; else bad "helm lint --strict (defaults)" "$out"; fi
if out=$("$HELM" lint --strict "$chart" -f "$chart/ci/everything-values.yaml" 2>&1); then
    ok "helm lint --strict (ci/everything-values.yaml)"
else
    bad "helm lint --strict (ci/everything-values.yaml)" "$out"
fi
if out=$("$HELM" lint --strict "$chart/charts/crds" 2>&1); then ok "helm lint --strict (CRD subchart alone)"; else bad "helm lint --strict (CRD subchart alone)" "$out"; fi

# --- Defaults -------------------------------------------------------------------------------
if render def; then ok "helm template (defaults)"; else bad "helm template (defaults)" "$(cat "$tmp/def.err")"; fi
ctl=$(doc "$tmp/def.yaml" Deployment t-ferrolb-controller)
spk=$(doc "$tmp/def.yaml" DaemonSet t-ferrolb-speaker)
ctl_sc=$(sed -n '/^          securityContext:/,/^      [a-z]/p' <<<"$ctl")
spk_sc=$(sed -n '/^          securityContext:/,/^      [a-z]/p' <<<"$spk")

check "controller Deployment has 2 replicas" has "$ctl" '^  replicas: 2$'
check "controller runs with --leader-elect" has "$ctl" '- --leader-elect$'
check "controller gets POD_NAME from the downward API" \
    bash -c 'grep -A3 "name: POD_NAME$" <<<"$1" | grep -q "fieldPath: metadata.name"' _ "$ctl"
check "controller gets POD_NAMESPACE from the downward API" \
    bash -c 'grep -A3 "name: POD_NAMESPACE$" <<<"$1" | grep -q "fieldPath: metadata.namespace"' _ "$ctl"
check "controller and speaker cap glibc malloc arenas at 2 (GLIBC_TUNABLES)" \
    bash -c 'for w in "$1" "$2"; do grep -A1 "name: GLIBC_TUNABLES$" <<<"$w" | grep -q "value: glibc.malloc.arena_max=2$" || exit 1; done' _ "$ctl" "$spk"
if render tun --set 'controller.extraEnv[0].name=GLIBC_TUNABLES' --set 'controller.extraEnv[0].value=glibc.malloc.arena_max=1'; then
    check "extraEnv that sets GLIBC_TUNABLES replaces the chart's entry instead of repeating the name" \
        bash -c '[[ $(doc "$1" Deployment t-ferrolb-controller | grep -c "name: GLIBC_TUNABLES$") == 1 ]] && doc "$1" Deployment t-ferrolb-controller | grep -q "value: glibc.malloc.arena_max=1$"' _ "$tmp/tun.yaml"
else
    bad "helm template with GLIBC_TUNABLES in extraEnv" "$(cat "$tmp/tun.err")"
fi
check "controller probes /healthz and /readyz" \
    bash -c 'grep -A2 "livenessProbe:" <<<"$1" | grep -q "path: /healthz" && grep -A2 "readinessProbe:" <<<"$1" | grep -q "path: /readyz"' _ "$ctl"
check "controller has resource requests" bash -c 'grep -A3 "resources:" <<<"$1" | grep -q "requests:"' _ "$ctl"
check "controller: runAsNonRoot, readOnlyRootFilesystem, no privilege escalation" \
    bash -c 'grep -q "runAsNonRoot: true" <<<"$1" && grep -q "readOnlyRootFilesystem: true" <<<"$1" && grep -q "allowPrivilegeEscalation: false" <<<"$1"' _ "$ctl_sc"
check "controller drops ALL capabilities and adds none" \
    bash -c '[[ "$(list_under drop <<<"$1")" == ALL && -z "$(list_under add <<<"$1")" ]]' _ "$ctl_sc"
check "controller pod uses seccomp RuntimeDefault" has "$ctl" 'type: RuntimeDefault'
check "controller exposes the metrics port 7472" has "$ctl" 'containerPort: 7472'
check "controller image is ghcr.io/ferrolb/ferrolb:$version" has "$ctl" "image: ghcr.io/ferrolb/ferrolb:$version\$"
if render digest --set image.tag=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef; then
    check "a digest as image.tag renders repository@sha256:..." \
        bash -c '[[ $(grep -c "image: ghcr.io/ferrolb/ferrolb@sha256:0123456789abcdef" "$1") == 2 ]]' _ "$tmp/digest.yaml"
else
    bad "helm template --set image.tag=sha256:..." "$(cat "$tmp/digest.err")"
fi
check "controller PodDisruptionBudget exists" bash -c '[[ -n "$1" ]]' _ "$(doc "$tmp/def.yaml" PodDisruptionBudget)"

check "speaker DaemonSet uses hostNetwork" has "$spk" '^      hostNetwork: true$'
check "speaker adds NET_RAW and only NET_RAW" bash -c '[[ "$(list_under add <<<"$1")" == NET_RAW ]]' _ "$spk_sc"
check "speaker drops ALL other capabilities" bash -c '[[ "$(list_under drop <<<"$1")" == ALL ]]' _ "$spk_sc"
check "speaker: readOnlyRootFilesystem, no privilege escalation" \
    bash -c 'grep -q "readOnlyRootFilesystem: true" <<<"$1" && grep -q "allowPrivilegeEscalation: false" <<<"$1"' _ "$spk_sc"
check "speaker is not privileged" hasnt "$spk" 'privileged: true'
check "speaker gets NODE_NAME from spec.nodeName and passes it" \
    bash -c 'grep -A3 "name: NODE_NAME$" <<<"$1" | grep -q "fieldPath: spec.nodeName" && grep -q -- "- --node-name=\$(NODE_NAME)" <<<"$1"' _ "$spk"
check "speaker opens memberlist UDP 7946" bash -c 'grep -A2 "name: memberlist" <<<"$1" | grep -q "containerPort: 7946" && grep -A2 "name: memberlist" <<<"$1" | grep -q "protocol: UDP"' _ "$spk"
check "speaker passes the failover defaults (25ms, 200ms, 3, 200)" \
    bash -c 'grep -q -- "--heartbeat-interval=25ms" <<<"$1" && grep -q -- "--dead-after=200ms" <<<"$1" && grep -q -- "--garp-burst=3$" <<<"$1" && grep -q -- "--garp-rate=200$" <<<"$1"' _ "$spk"
check "speaker probes /healthz and /readyz on 7473" \
    bash -c 'grep -q "path: /healthz" <<<"$1" && grep -q "path: /readyz" <<<"$1" && grep -q "containerPort: 7473" <<<"$1"' _ "$spk"
check "speaker tolerates control-plane nodes by default" has "$spk" 'key: node-role.kubernetes.io/control-plane'
check "no --interfaces flag by default" hasnt "$spk" '--interfaces'

check "ServiceMonitor absent by default" bash -c '[[ -z "$1" ]]' _ "$(doc "$tmp/def.yaml" ServiceMonitor)"
check "no IPAddressPool or L2Advertisement by default" \
    bash -c '[[ -z "$1$2" ]]' _ "$(doc "$tmp/def.yaml" IPAddressPool)" "$(doc "$tmp/def.yaml" L2Advertisement)"
check "metrics Services for both components by default" \
    bash -c '[[ $(grep -c "^kind: Service$" "$1") == 2 ]]' _ "$tmp/def.yaml"
# Every CRD crdgen generates (the count grows with the API; it is read, not assumed).
NCRD=$(grep -c "^kind: CustomResourceDefinition$" "$chart/charts/crds/files/crds.yaml")
check "the $NCRD generated CRDs rendered by default (at least IPAddressPool and L2Advertisement)" \
    bash -c '[[ $2 -ge 2 && $(grep -c "^kind: CustomResourceDefinition$" "$1") == "$2" ]]' _ "$tmp/def.yaml" "$NCRD"
check "no wildcard in any RBAC rule" bash -c '! grep -E "(verbs|resources|apiGroups): .*\"\*\"" "$1"' _ "$tmp/def.yaml"

# The CRDs reach the cluster as crdgen wrote them, plus the chart's labels (and, with keep, the
# resource-policy annotation) in their metadata. without_added_meta drops exactly those blocks.
norm() { grep -v -e '^#' -e '^---' -e '^[[:space:]]*$'; }
without_added_meta() {
    awk '
        /^metadata:$/ { inmeta = 1; print; next }
        /^[^ ]/ { inmeta = 0; skip = 0 }
        inmeta && /^  (labels|annotations):$/ { skip = 1; next }
        inmeta && /^  [^ ]/ { skip = 0 }
        !skip { print }
    '
}
export -f without_added_meta
generated=$chart/charts/crds/files/crds.yaml
if render crds --show-only charts/crds/templates/crds.yaml \
    && diff <(norm <"$generated") <(without_added_meta <"$tmp/crds.yaml" | norm) >"$tmp/crds.diff"; then
    ok "rendered CRDs are the generated file, with only labels added"
else
    bad "rendered CRDs are the generated file, with only labels added" "$(cat "$tmp/crds.err" "$tmp/crds.diff" 2>/dev/null)"
fi
check "the generated file holds every kind: IPAddressPool, L2Advertisement, ForwarderNode" \
    bash -c 'for k in IPAddressPool L2Advertisement ForwarderNode; do grep -q "^    kind: $k$" "$1" || exit 1; done' _ "$generated"
check "every CRD carries the release's labels" \
    bash -c '[[ $(grep -c "^    app.kubernetes.io/managed-by: Helm$" "$1") == "$2" && $(grep -c "^    app.kubernetes.io/instance: t$" "$1") == "$2" ]]' _ "$tmp/crds.yaml" "$NCRD"
check "by default the CRDs are not kept on uninstall" bash -c '! grep -q "helm.sh/resource-policy" "$1"' _ "$tmp/crds.yaml"
if render keep --set crds.keep=true --show-only charts/crds/templates/crds.yaml; then
    check "crds.keep=true annotates every CRD with helm.sh/resource-policy: keep" \
        bash -c '[[ $(grep -c "^    helm.sh/resource-policy: keep$" "$1") == "$2" ]]' _ "$tmp/keep.yaml" "$NCRD"
    check "crds.keep=true changes nothing else in the CRDs" \
        bash -c 'diff <(without_added_meta <"$1") <(without_added_meta <"$2")' _ "$tmp/crds.yaml" "$tmp/keep.yaml"
else
    bad "helm template --set crds.keep=true" "$(cat "$tmp/keep.err")"
fi

# The Lease is the chart's, and the leader-election Role reaches only it (and may create it).
lease=$(doc "$tmp/def.yaml" Lease)
role=$(doc "$tmp/def.yaml" Role t-ferrolb-controller-leader-election)
check "the chart creates the controller's Lease t-ferrolb-controller, without a spec" \
    bash -c 'grep -q "^  name: t-ferrolb-controller$" <<<"$1" && ! grep -q "^spec:" <<<"$1"' _ "$lease"
check "the leader-election Role names the Lease for get and update" \
    bash -c 'grep -q "resourceNames: \[\"t-ferrolb-controller\"\]" <<<"$1" && grep -A1 resourceNames <<<"$1" | grep -q "verbs: \[\"get\", \"update\"\]"' _ "$role"
check "the controller is told the Lease's name" has "$ctl" '- --lease-name=t-ferrolb-controller$'

# --- The README's RBAC table is what the chart grants -----------------------------------------
rbac_rendered() {
    awk '
        /^---/ { kind = ""; comp = "" }
        /^kind: / { kind = $2 }
        /^    app.kubernetes.io\/component: / { comp = $2 }
        (kind == "ClusterRole" || kind == "Role") && /apiGroups:/ {
            g = $0; sub(/.*\[ *"?/, "", g); sub(/"? *\].*/, "", g); if (g == "") g = "core"
        }
        (kind == "ClusterRole" || kind == "Role") && /resources:/ {
            r = $0; sub(/.*\[ *"?/, "", r); sub(/"? *\].*/, "", r)
        }
        (kind == "ClusterRole" || kind == "Role") && /verbs:/ {
            v = $0; sub(/.*\[/, "", v); sub(/\].*/, "", v); gsub(/[" ]/, "", v)
            print comp "|" kind "|" g "|" r "|" v
        }
    ' "$1" | sort
}
rbac_readme() {
    awk -F'|' '
        /^\| (controller|speaker) \|/ {
            for (i = 2; i <= 6; i++) { gsub(/^ +| +$/, "", $i) }
            k = $3; sub(/ .*/, "", k); v = $6; gsub(/ /, "", v)
            print $2 "|" k "|" $4 "|" $5 "|" v
        }
    ' "$chart/README.md" | sort
}
rbac_readme >"$tmp/rbac.readme"
rbac_rendered "$tmp/def.yaml" >"$tmp/rbac.rendered"
if diff "$tmp/rbac.readme" "$tmp/rbac.rendered" >"$tmp/rbac.diff" && [[ -s "$tmp/rbac.readme" ]]; then
    ok "README RBAC table matches the rendered roles ($(wc -l <"$tmp/rbac.readme") rules)"
else
    bad "README RBAC table matches the rendered roles (< README, > rendered)" "$(cat "$tmp/rbac.diff")"
fi

# With bgp.enabled the roles gain exactly the rows of the README's BGP table.
rbac_readme_bgp() {
    awk -F'|' '
        /^\| Component \(bgp.enabled\)/ { on = 1; next }
        on && /^\| (controller|speaker) \(bgp\) \|/ {
            for (i = 2; i <= 6; i++) { gsub(/^ +| +$/, "", $i) }
            sub(/ \(bgp\)$/, "", $2)
            k = $3; sub(/ .*/, "", k); v = $6; gsub(/ /, "", v)
            print $2 "|" k "|" $4 "|" $5 "|" v
            next
        }
        on && !/^\|/ { on = 0 }
    ' "$chart/README.md"
}
if render bgp --set bgp.enabled=true; then
    { rbac_readme; rbac_readme_bgp; } | sort >"$tmp/rbac-bgp.readme"
    rbac_rendered "$tmp/bgp.yaml" >"$tmp/rbac-bgp.rendered"
    if diff "$tmp/rbac-bgp.readme" "$tmp/rbac-bgp.rendered" >"$tmp/rbac-bgp.diff" && [[ -n "$(rbac_readme_bgp)" ]]; then
        ok "README RBAC tables match the rendered roles with bgp.enabled ($(wc -l <"$tmp/rbac-bgp.readme") rules)"
    else
        bad "README RBAC tables match the rendered roles with bgp.enabled (< README, > rendered)" "$(cat "$tmp/rbac-bgp.diff")"
    fi
    check "with bgp.enabled both components get --bgp" \
        bash -c '[[ $(grep -c "^            - --bgp$" "$1") == 2 ]]' _ "$tmp/bgp.yaml"
    check "without bgp.enabled no component gets --bgp" \
        bash -c '! grep -q "^            - --bgp" "$1"' _ "$tmp/def.yaml"
else
    bad "helm template --set bgp.enabled=true" "$(cat "$tmp/bgp.err")"
fi

# --- ServiceMonitor only when the API is served ---------------------------------------------
if render sm --api-versions monitoring.coreos.com/v1/ServiceMonitor; then
    check "two ServiceMonitors with --api-versions monitoring.coreos.com/v1/ServiceMonitor" \
        bash -c '[[ $(grep -c "^kind: ServiceMonitor$" "$1") == 2 ]]' _ "$tmp/sm.yaml"
else
    bad "helm template --api-versions monitoring.coreos.com/v1/ServiceMonitor" "$(cat "$tmp/sm.err")"
fi
if render nometrics --api-versions monitoring.coreos.com/v1/ServiceMonitor --set metrics.enabled=false; then
    check "metrics.enabled=false: no ServiceMonitor, no metrics Service, no scrape annotation" \
        bash -c '! grep -q -e "^kind: ServiceMonitor$" -e "^kind: Service$" -e "prometheus.io/scrape" "$1"' _ "$tmp/nometrics.yaml"
else
    bad "helm template --set metrics.enabled=false" "$(cat "$tmp/nometrics.err")"
fi

# --- CRDs switched off ------------------------------------------------------------------------
if render nocrds --set crds.enabled=false; then
    check "crds.enabled=false renders no CRD" bash -c '! grep -q "^kind: CustomResourceDefinition$" "$1"' _ "$tmp/nocrds.yaml"
else
    bad "helm template --set crds.enabled=false" "$(cat "$tmp/nocrds.err")"
fi
if "$HELM" template ferrolb-crds "$chart/charts/crds" --set keep=true >"$tmp/sub.yaml" 2>"$tmp/sub.err"; then
    check "the CRD subchart installs alone: every CRD, kept with keep=true" \
        bash -c '[[ $(grep -c "^kind: CustomResourceDefinition$" "$1") == "$2" && $(grep -c "helm.sh/resource-policy: keep" "$1") == "$2" ]]' _ "$tmp/sub.yaml" "$NCRD"
else
    bad "helm template charts/ferrolb/charts/crds" "$(cat "$tmp/sub.err")"
fi

# --- Everything changed -----------------------------------------------------------------------
ev=(-f "$chart/ci/everything-values.yaml")
if render ev "${ev[@]}" --api-versions monitoring.coreos.com/v1/ServiceMonitor; then
    ok "helm template (ci/everything-values.yaml)"
else
    bad "helm template (ci/everything-values.yaml)" "$(cat "$tmp/ev.err")"
fi
ectl=$(doc "$tmp/ev.yaml" Deployment edge-lb-controller)
espk=$(doc "$tmp/ev.yaml" DaemonSet edge-lb-speaker)
both="$ectl$espk"
check "everything: 3 controller replicas" has "$ectl" '^  replicas: 3$'
check "everything: image repository, tag and pullPolicy in both workloads" \
    bash -c '[[ $(grep -c "image: registry.example.test/mirror/ferrolb:0.1.0-rc.1$" <<<"$1") == 2 && $(grep -c "imagePullPolicy: Always" <<<"$1") == 2 ]]' _ "$both"
check "everything: imagePullSecrets in both workloads" bash -c '[[ $(grep -c -- "- name: regcred" <<<"$1") == 2 ]]' _ "$both"
check "everything: lbClass, logFormat and ignoreClassless reach both binaries" \
    bash -c '[[ $(grep -c -e "--lb-class=example.test/edge" -e "--log-format=json" -e "- --ignore-classless" <<<"$1") == 6 ]]' _ "$both"
check "everything: extraArgs override the chart's --log-level instead of repeating it" \
    bash -c '[[ $(grep -c -- "--log-level=trace" <<<"$1") == 2 ]] && ! grep -q -- "--log-level=debug" <<<"$1"' _ "$both"
check "everything: extraEnv in both workloads" bash -c '[[ $(grep -c "name: RUST_BACKTRACE" <<<"$1") == 2 ]]' _ "$both"
check "everything: lease name and IPv6 metrics address" \
    bash -c 'grep -q -- "--lease-name=edge-lb-leader" <<<"$1" && grep -q -- "--metrics-addr=\[::\]:9472" <<<"$1"' _ "$ectl"
check "everything: the Lease and the Role's resourceNames follow controller.leaseName" \
    bash -c 'doc "$1" Lease edge-lb-leader | grep -q "^kind: Lease" && doc "$1" Role edge-lb-controller-leader-election | grep -q "resourceNames: \[\"edge-lb-leader\"\]"' _ "$tmp/ev.yaml"
check "everything: speaker interfaces and failover timing" \
    bash -c 'grep -q -- "--interfaces=eth0,bond0.100" <<<"$1" && grep -q -- "--heartbeat-interval=50ms" <<<"$1" && grep -q -- "--dead-after=400ms" <<<"$1" && grep -q -- "--garp-burst=5$" <<<"$1" && grep -q -- "--garp-rate=500$" <<<"$1" && grep -q -- "--memberlist-port=17946" <<<"$1"' _ "$espk"
check "everything: per-component resources" \
    bash -c 'grep -q "memory: 384Mi" <<<"$1" && grep -q "memory: 128Mi" <<<"$2"' _ "$ectl" "$espk"
check "everything: per-component nodeSelector, tolerations and affinity" \
    bash -c 'grep -q "example.test/role: infra" <<<"$1" && grep -q "key: example.test/infra" <<<"$1" && grep -q "key: example.test/zone" <<<"$1" && grep -q "example.test/lan: \"true\"" <<<"$2" && grep -q "key: example.test/edge" <<<"$2" && grep -q "key: example.test/no-lb" <<<"$2"' _ "$ectl" "$espk"
check "everything: tolerateControlPlane=false drops the control-plane toleration" hasnt "$espk" 'node-role.kubernetes.io/control-plane'
check "everything: priorityClassName per component" \
    bash -c 'grep -q "priorityClassName: system-cluster-critical" <<<"$1" && grep -q "priorityClassName: system-node-critical" <<<"$2"' _ "$ectl" "$espk"
check "everything: podSecurityContext reaches the pod" has "$ectl" 'fsGroup: 65000'
check "everything: service accounts renamed" \
    bash -c 'grep -q "serviceAccountName: edge-lb-ctl" <<<"$1" && grep -q "serviceAccountName: edge-lb-spk" <<<"$2"' _ "$ectl" "$espk"
check "everything: ServiceMonitors carry the extra label and interval" \
    bash -c '[[ $(grep -c "release: kube-prometheus" <<<"$1") == 2 && $(grep -c "interval: 15s" <<<"$1") == 2 ]]' _ "$(doc "$tmp/ev.yaml" ServiceMonitor)"
pool=$(doc "$tmp/ev.yaml" IPAddressPool lan)
l2=$(doc "$tmp/ev.yaml" L2Advertisement lan-l2)
check "everything: IPAddressPool 'lan' created from values with its three address blocks" \
    bash -c 'grep -q -- "- 198.51.100.10-198.51.100.20" <<<"$1" && grep -q -- "- 203.0.113.0/28" <<<"$1" && grep -q -- "- 2001:db8::/120" <<<"$1" && grep -q "autoAssign: false" <<<"$1" && grep -q "priority: 10" <<<"$1"' _ "$pool"
check "everything: L2Advertisement 'lan-l2' announces pool lan on eth0" \
    bash -c 'grep -A1 "ipAddressPools:" <<<"$1" | grep -q -- "- lan" && grep -A1 "interfaces:" <<<"$1" | grep -q -- "- eth0"' _ "$l2"
check "pool is a post-install hook with Helm ownership metadata while ferrolb.io is not served" \
    bash -c 'grep -q "helm.sh/hook: post-install" <<<"$1" && grep -q "meta.helm.sh/release-name: t" <<<"$1" && grep -q "app.kubernetes.io/managed-by: Helm" <<<"$1"' _ "$pool"
check "hook form carries the install-hook marker; the Deployment does not claim the pool yet" \
    bash -c 'grep -q "ferrolb.io/created-by: helm-install-hook" <<<"$1" && ! grep -q "address-pool-in-release" <<<"$2"' _ "$pool" "$ectl"
if render evserved "${ev[@]}" --api-versions ferrolb.io/v1beta1/IPAddressPool; then
    check "pool is an ordinary release object once ferrolb.io/v1beta1 is served" \
        bash -c 'p=$(awk "/^kind: IPAddressPool/,/^spec:/" "$1"); [[ -n "$p" ]] && ! grep -q -e "helm.sh/hook" -e "created-by" <<<"$p"' _ "$tmp/evserved.yaml"
    check "the controller Deployment then records that the pool is a release object" \
        bash -c 'doc "$1" Deployment edge-lb-controller | grep -q "ferrolb.io/address-pool-in-release: \"true\""' _ "$tmp/evserved.yaml"
else
    bad "helm template --api-versions ferrolb.io/v1beta1/IPAddressPool" "$(cat "$tmp/evserved.err")"
fi

# --- The README's minimal values file renders ------------------------------------------------
awk '/^# values.yaml: helm install/ { on = 1 } on && /^```/ { exit } on' "$repo/README.md" >"$tmp/readme-values.yaml"
if [[ -s "$tmp/readme-values.yaml" ]] && render readme -f "$tmp/readme-values.yaml"; then
    check "README's minimal values file: a pool with both families and an L2Advertisement" \
        bash -c 'p=$(doc "$1" IPAddressPool default); grep -q -- "- 198.51.100.100-198.51.100.149" <<<"$p" && grep -q -- "- 2001:db8::100-2001:db8::1ff" <<<"$p" && doc "$1" L2Advertisement default | grep -q "^kind: L2Advertisement"' _ "$tmp/readme.yaml"
else
    bad "README's minimal values file renders" "$(cat "$tmp/readme-values.yaml" "$tmp/readme.err" 2>/dev/null)"
fi

# --- Long names stay within the API's limits -------------------------------------------------
long=$(printf 'r%.0s' {1..52})
if render long --set fullnameOverride="$long"; then
    check "a 52-character fullname: every Service name is a DNS label (at most 63), all distinct" \
        bash -c 'names=$(awk "/^kind: Service$/ { s = 1; next } s && /^  name: / { print \$2; s = 0 }" "$1"); [[ $(wc -l <<<"$names") == 2 && $(sort -u <<<"$names" | wc -l) == 2 ]] && ! awk "length > 63" <<<"$names" | grep -q .' _ "$tmp/long.yaml"
else
    bad "helm template --set fullnameOverride=<52 characters>" "$(cat "$tmp/long.err")"
fi

# --- Forwarder mode: a node pool from values --------------------------------------------------
"$HELM" template t "$chart" --set addressPool.create=true --set addressPool.nodeAddresses.enabled=true \
    --set-string addressPool.nodeAddresses.nodeSelector.matchLabels.edge=true \
    --set 'addressPool.nodeAddresses.cidrs={198.51.100.0/24}' >"$tmp/nodepool.yaml" 2>"$tmp/nodepool.err"
check "nodeAddresses.enabled renders a node pool (selector, cidrs, InternalIP) without addresses" \
    bash -c 'p=$(awk "/^kind: IPAddressPool$/ { on = 1 } on && /^---/ { exit } on" "$1"); grep -q "nodeAddresses:" <<<"$p" && grep -q "addressType: InternalIP" <<<"$p" && grep -q "edge: \"true\"" <<<"$p" && grep -q "198.51.100.0/24" <<<"$p" && ! grep -q "^  addresses:" <<<"$p"' _ "$tmp/nodepool.yaml"
check "a node pool gets no L2Advertisement" bash -c '! grep -q "^kind: L2Advertisement$" "$1"' _ "$tmp/nodepool.yaml"
check "the controller is told which pods are this release's speakers" \
    grep -q -- "--speaker-selector=app.kubernetes.io/instance=t,app.kubernetes.io/component=speaker" "$tmp/def.yaml"
check "the speaker gets the forwarder deny-list" grep -q -- "--forwarder-deny-ports=22,53,179,2379-2380,6443,10248-10260" "$tmp/def.yaml"

# --- Bad values are rejected with a message ---------------------------------------------------
# rejects DESCRIPTION EXPECTED-TEXT helm-args...: rendering must fail and stderr must contain the text.
rejects() {
    local desc=$1 want=$2
    shift 2
    if "$HELM" template t "$chart" "$@" >/dev/null 2>"$tmp/rej.err"; then
        bad "$desc: was accepted"
    elif grep -qF -- "$want" "$tmp/rej.err"; then
        ok "$desc: $(grep -F -- "$want" "$tmp/rej.err" | head -n 1 | sed 's/^[- ]*//' | cut -c1-110)"
    else
        bad "$desc: failed without mentioning '$want'" "$(cat "$tmp/rej.err")"
    fi
}
rejects "schema rejects controller.replicas=-1" "at '/controller/replicas': minimum" --set controller.replicas=-1
rejects "a node pool with addresses of its own" "at '/addressPool/addresses': maxItems" \
    --set addressPool.create=true --set addressPool.nodeAddresses.enabled=true --set 'addressPool.addresses={198.51.100.10/32}'
rejects "schema rejects nodeAddresses.addressType=Public" "at '/addressPool/nodeAddresses/addressType'" \
    --set addressPool.create=true --set addressPool.nodeAddresses.enabled=true --set addressPool.nodeAddresses.addressType=Public
rejects "schema rejects a deny-list entry that is not a port" "at '/forwarder/denyPorts/0'" --set 'forwarder.denyPorts={ssh}'
rejects "schema rejects forwarder.nodePortShadowing=maybe" "at '/forwarder/nodePortShadowing'" --set forwarder.nodePortShadowing=maybe
rejects "schema rejects logFormat=xml" "at '/logFormat': value must be one of 'text', 'json'" --set logFormat=xml
rejects "schema rejects logLevel=loud" "at '/logLevel'" --set logLevel=loud
rejects "schema rejects speaker.heartbeatInterval=fast" "at '/speaker/heartbeatInterval'" --set speaker.heartbeatInterval=fast
rejects "schema rejects speaker.garpBurst=0" "at '/speaker/garpBurst'" --set speaker.garpBurst=0
rejects "schema rejects speaker.memberlistPort=70000" "at '/speaker/memberlistPort'" --set speaker.memberlistPort=70000
rejects "schema rejects a misspelt key" "additional properties 'contoller' not allowed" --set contoller.replicas=2
rejects "schema rejects a pool without addresses" "at '/addressPool/addresses': minItems" --set addressPool.create=true
rejects "schema rejects a malformed pool address" "at '/addressPool/addresses/0'" --set addressPool.create=true --set 'addressPool.addresses={not-an-ip}'
rejects "schema rejects an interface name with a slash" "at '/speaker/interfaces/0'" --set 'speaker.interfaces={eth0/1}'
rejects "durations longer than the speaker accepts" "speaker.deadAfter is longer than an hour" --set speaker.deadAfter=7200s
rejects "a loopback metrics address (the probes would fail)" "is a loopback address" --set metrics.bindAddress=127.0.0.1
rejects "schema rejects an IPv4 bind address with an octet over 255" "at '/metrics/bindAddress'" --set metrics.bindAddress=999.1.1.1
rejects "deadAfter must be at least twice heartbeatInterval" "must be at least twice speaker.heartbeatInterval" --set speaker.deadAfter=40ms
check "deadAfter of exactly twice heartbeatInterval is accepted" \
    bash -c '"$1" template t "$2" --set speaker.deadAfter=50ms >/dev/null' _ "$HELM" "$chart"

# --- NOTES.txt renders (helm install --dry-run needs a cluster, so render it through tpl) ------
notes() {
    local dir=$tmp/notes-chart
    rm -rf "$dir" && cp -r "$chart" "$dir" && cp "$chart/templates/NOTES.txt" "$dir/notes.txt.copy"
    printf '%s\n' 'apiVersion: v1' 'kind: ConfigMap' 'metadata:' '  name: notes' 'data:' \
        '  notes: {{ tpl (.Files.Get "notes.txt.copy") . | toJson }}' >"$dir/templates/zz-notes.yaml"
    "$HELM" template t "$dir" --show-only templates/zz-notes.yaml "$@" 2>&1
}
out=$(notes)
check "NOTES.txt renders and tells how to create a pool when none was made" \
    bash -c 'grep -q "kind: IPAddressPool" <<<"$1" && grep -q "helm uninstall t" <<<"$1"' _ "$out"
out=$(notes --set crds.keep=true)
check "NOTES.txt says the CRDs are kept with crds.keep=true" \
    bash -c 'grep -q "are kept by" <<<"$1" && grep -q "kubectl delete crd ipaddresspools.ferrolb.io" <<<"$1"' _ "$out"
out=$(notes "${ev[@]}")
check "NOTES.txt names the pool created from values" \
    bash -c 'grep -qF "IPAddressPool \\\"lan\\\" (198.51.100.10-198.51.100.20, 203.0.113.0/28, 2001:db8::/120)" <<<"$1"' _ "$out"

# --- The binaries accept the flags the chart passes ----------------------------------------
# Runs each binary with the rendered args followed by --version: clap parses (and validates)
# the args in order before it reaches --version, so an unknown flag or a bad value fails here.
# Uses $FERROLB_BIN_DIR, else target/debug, else target/release; skipped when none is built.
args_of() {
    # The container args of one rendered workload, one per line, downward-API variables filled.
    sed -n '/^          args:/,/^          [a-z]/p' <<<"$1" | sed -n 's/^            - //p' \
        | sed -e 's/\$(NODE_NAME)/node-1/' -e 's/\$(POD_NAME)/pod-1/' -e 's/\$(POD_NAMESPACE)/ferrolb-system/' \
        | sed -e 's/^"\(.*\)"$/\1/'
}
for bin in ferrolb-controller ferrolb-speaker; do
    exe=""
    for dir in "${FERROLB_BIN_DIR:-}" "$repo/target/debug" "$repo/target/release"; do
        if [[ -n "$dir" && -x "$dir/$bin" ]]; then exe=$dir/$bin; break; fi
    done
    if [[ -z "$exe" ]]; then
        skip "$bin accepts the chart's flags (not built)"
        continue
    fi
    for which in def ev; do
        if [[ $bin == ferrolb-controller ]]; then kind=Deployment; else kind=DaemonSet; fi
        mapfile -t flags < <(args_of "$(doc "$tmp/$which.yaml" "$kind")")
        if out=$(timeout 20 "$exe" "${flags[@]}" --version 2>&1) && [[ "$out" == *"$version"* && ${#flags[@]} -gt 3 ]]; then
            ok "$bin accepts the chart's ${#flags[@]} flags ($which values; ${exe#"$repo"/})"
        else
            bad "$bin accepts the chart's flags ($which values; ${exe#"$repo"/})" "$(printf '%s ' "${flags[@]}")"$'\n'"$out"
        fi
    done
done

# --- Offline dependency handling and packaging ------------------------------------------------
pkg=$tmp/pkg-chart
cp -r "$chart" "$pkg"
if out=$("$HELM" dependency build "$pkg" 2>&1); then
    ok "helm dependency build works offline (Chart.lock in sync with Chart.yaml)"
else
    bad "helm dependency build works offline (Chart.lock in sync with Chart.yaml)" "$out"
fi
check "after dependency build the CRDs are still rendered once" \
    bash -c '[[ $("$1" template t "$2" | grep -c "^kind: CustomResourceDefinition$") == "$3" ]]' _ "$HELM" "$pkg" "$NCRD"
if out=$("$HELM" package "$chart" -d "$tmp/dist" 2>&1) \
    && "$HELM" template t "$tmp/dist/ferrolb-$version.tgz" --namespace ferrolb-system >"$tmp/packed.yaml" 2>&1 \
    && diff -q "$tmp/def.yaml" "$tmp/packed.yaml" >/dev/null; then
    ok "helm package: the packaged chart renders the same as the directory"
else
    bad "helm package: the packaged chart renders the same as the directory" "$out"
fi

finish
