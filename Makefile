# ferrolb — the commands a developer and CI use. `make help` lists them.
SHELL := /bin/bash
CARGO ?= cargo
LAB := target/debug/ferrolb-lab

.PHONY: help setup tools build test unit lab-test chart-test image image-test lint crds bench-speaker bench-membership \
        lab-up lab-down demo bench-controller bench-failover bench-forwarder clean-labs

help: ## This list
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

setup: ## Install the Debian packages the lab needs (when missing)
	@tests/lab/scripts/setup-host.sh

tools: setup ## Build etcd, kube-apiserver, kube-proxy, kubectl and helm from source (cached)
	@tests/lab/scripts/build-tools.sh >/dev/null

build: ## Build every binary (debug)
	$(CARGO) build --workspace --bins

test: ## Everything: unit, property and lab tests, chart and image checks
	@tests/run-tests.sh

unit: ## Unit and property tests only (no lab, no root)
	$(CARGO) test --workspace --exclude ferrolb-e2e --exclude ferrolb-lab

lint: ## rustfmt and clippy, as CI wants them
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

crds: ## Regenerate the chart's CRDs from the Rust types
	$(CARGO) run -q -p ferrolb-crds --bin crdgen > charts/ferrolb/charts/crds/files/crds.yaml

lab-up: tools build ## Bring up a lab (3 nodes, kube-proxy) and leave it running
	$(LAB) up --nodes 3 --kube-proxy

lab-down: ## Tear down the most recent lab
	$(LAB) down

clean-labs: ## Tear down every lab whose owner is gone
	-$(LAB) gc

demo: tools build ## The whole story on this machine: real nodes, the chart's pods, an L2 Service and a forwarder Service answering from pods
	@tests/demo.sh

bench-controller: tools ## Allocator and controller figures at 1k/10k/50k/100k Services: create → IP, restart, RSS and writes (about 15 min; bulk Services are copies written into etcd, FERROLB_BENCH_BULK=api creates them through the API: hours for 100k, the API server does O(n) work per ClusterIP; FERROLB_BENCH_SIZES=1000,10000 for a short run)
	$(CARGO) build --release --workspace --bins
	FERROLB_PROFILE=release $(CARGO) run --release -p ferrolb-e2e --bin bench_controller

bench-failover: tools build ## Failover time against an oracle and with real speaker pods, ARP latency against the kernel, then 10 min of mixed load: false failovers and kills under it (FERROLB_BENCH_CONTENTION_SECONDS=0 skips it, FERROLB_BENCH_PARTS=contention runs only it)
	$(CARGO) build --release --workspace --bins
	FERROLB_PROFILE=release $(CARGO) run --release -p ferrolb-e2e --bin bench_failover

bench-forwarder: tools ## Forwarder mode: create → node addresses, and kube-proxy's path against the direct path
	$(CARGO) build --release --workspace --bins
	FERROLB_PROFILE=release $(CARGO) run --release -p ferrolb-e2e --bin bench_forwarder

bench-speaker: tools build ## Speaker cost: CPU idle and under a 200k pps flood, ARP/NDP latency against the kernel, membership traffic and failover at 3 and 50 nodes
	$(CARGO) build --release --workspace --bins
	FERROLB_PROFILE=release $(CARGO) run --release -p ferrolb-e2e --bin bench_speaker

bench-membership: ## The membership core simulated at 10/100/1,000 members (virtual time, fixed seed; about 2 min): traffic, detection, false positives
	$(CARGO) run --release -p ferrolb-speaker-core --example membership_bench

.PHONY: plugin
plugin: ## Static release kubectl-ferrolb in target/x86_64-unknown-linux-gnu/release/ (copy it onto PATH; `kubectl ferrolb` finds it)
	RUSTFLAGS="$$RUSTFLAGS -C target-feature=+crt-static" $(CARGO) build --release \
		--target x86_64-unknown-linux-gnu -p ferrolb-cli --bin kubectl-ferrolb
	@if readelf -lW target/x86_64-unknown-linux-gnu/release/kubectl-ferrolb | grep -q 'program interpreter'; then \
		echo "kubectl-ferrolb is not static" >&2; exit 1; fi
	@echo "built target/x86_64-unknown-linux-gnu/release/kubectl-ferrolb (static); install it with:"
	@echo "  install -m 0755 target/x86_64-unknown-linux-gnu/release/kubectl-ferrolb /usr/local/bin/"

.PHONY: bench-bgp
bench-bgp: tools build ## BGP mode against BIRD: BFD and hold-timer failover, rolling restart, node leaving, SIGSTOP, busy cores
	$(CARGO) build --release --workspace --bins
	FERROLB_PROFILE=release $(CARGO) run --release -p ferrolb-e2e --bin bench_bgp
