#!/usr/bin/env bash
# Installs the Debian packages the lab and the tests use, when they are missing.
# Idempotent and quiet when everything is present.
set -euo pipefail

PKGS=(iproute2 iptables nftables conntrack arping ndisc6 iputils-ping openssl curl ca-certificates procps
      # real nodes: a container runtime and CNI plugins per node namespace
      containerd runc containernetworking-plugins util-linux
      # BGP mode: the lab's router
      bird2
      # benchmarks: traffic and contention
      iperf3 stress-ng)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO="sudo"
echo "[setup-host] installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
