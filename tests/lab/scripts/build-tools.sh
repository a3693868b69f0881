#!/usr/bin/env bash
# Builds the upstream tools the lab runs (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kube-proxy, kubelet, kubectl, helm) from source with the machine's Go, through the Go module proxy.
# Results are cached by version outside the repository; a second run returns at once.
#
#   FERROLB_CACHE   cache root (default: $XDG_CACHE_HOME/ferrolb or ~/.cache/ferrolb)
#   K8S_VERSION, ETCD_VERSION, HELM_VERSION override the pinned versions.
#
# Prints the bin directory on its last line.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"

CACHE="${FERROLB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferrolb}"
BIN="$CACHE/tools/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION/bin"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod GOPATH="$CACHE/go" GOCACHE="$CACHE/go-build"
export GOPROXY="${GOPROXY:-https://proxy.golang.org,direct}"
export CGO_ENABLED=0

log() { printf '[build-tools] %s\n' "$*" >&2; }

need() {
    for b in "$@"; do [[ -x "$BIN/$b" ]] || return 1; done
}

if need etcd kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet kubectl helm; then
    echo "$BIN"
    exit 0
fi

command -v go >/dev/null || { log "Go is required to build the lab's Kubernetes tools"; exit 1; }
mkdir -p "$BIN"
WORK="$(mktemp -d "$CACHE/wrap.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# A wrapper module: `go install` refuses k8s.io/kubernetes because of its replace
# directives, so we require it from a module of our own and point each staging module
# at its published v0.<minor>.<patch> tag, taking the list from the release's go.mod.
build_kubernetes() {
    local dir="$WORK/k8s" staging="v0.${K8S_VERSION#v1.}"
    mkdir -p "$dir"
    (
        cd "$dir"
        go mod init ferrolb.io/lab/k8s >/dev/null 2>&1
        go mod edit -require="k8s.io/kubernetes@$K8S_VERSION"
        go mod download -json "k8s.io/kubernetes@$K8S_VERSION" >/dev/null
        local gomod="$GOPATH/pkg/mod/cache/download/k8s.io/kubernetes/@v/$K8S_VERSION.mod"
        sed -n 's#^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/.*#\1#p' "$gomod" | while read -r m; do
            go mod edit -replace="$m=$m@$staging"
        done
        cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
        log "resolving k8s.io/kubernetes $K8S_VERSION"
        go mod tidy >/dev/null 2>&1 || go mod tidy
        local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
        local ld="-s -w"
        for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
            ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
            ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
        done
        log "building kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy, kubelet, kubectl"
        # One `go build` for all of them, so they share one compile of the common packages.
        go build -trimpath -ldflags "$ld" -o "$BIN/" \
            k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
            k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-proxy \
            k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kubectl
    )
}

build_etcd() {
    local dir="$WORK/etcd"
    mkdir -p "$dir"
    (
        cd "$dir"
        go mod init ferrolb.io/lab/etcd >/dev/null 2>&1
        go mod edit -require="go.etcd.io/etcd/server/v3@$ETCD_VERSION"
        printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' > tools.go
        log "building etcd $ETCD_VERSION"
        go mod tidy >/dev/null 2>&1 || go mod tidy
        go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3
    )
}

build_helm() {
    local dir="$WORK/helm" major="${HELM_VERSION%%.*}"
    mkdir -p "$dir"
    (
        cd "$dir"
        go mod init ferrolb.io/lab/helm >/dev/null 2>&1
        go mod edit -require="helm.sh/helm/$major@$HELM_VERSION"
        printf '//go:build tools\n\npackage tools\n\nimport _ "helm.sh/helm/%s/cmd/helm"\n' "$major" > tools.go
        log "building helm $HELM_VERSION"
        go mod tidy >/dev/null 2>&1 || go mod tidy
        go build -trimpath -ldflags "-s -w -X helm.sh/helm/$major/internal/version.version=$HELM_VERSION" \
            -o "$BIN/helm" "helm.sh/helm/$major/cmd/helm"
    )
}

need etcd || build_etcd
need kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet kubectl || build_kubernetes
need helm || build_helm
log "tools ready in $BIN"
echo "$BIN"
