#!/usr/bin/env bash
# `make test`: every stage, timed. Stops at the first failing stage and says which.
set -euo pipefail
cd "$(dirname "$0")/.."

declare -a SUMMARY=()
stage() {
    local name="$1"; shift
    local t0=$SECONDS
    echo "=== stage: $name"
    if "$@"; then
        SUMMARY+=("$(printf '%-28s %5ds  ok' "$name" $((SECONDS - t0)))")
    else
        local rc=$?
        SUMMARY+=("$(printf '%-28s %5ds  FAILED' "$name" $((SECONDS - t0)))")
        report
        exit "$rc"
    fi
}
report() {
    echo "=== stage times"
    printf '%s\n' "${SUMMARY[@]}"
}

stage "host packages" tests/lab/scripts/setup-host.sh
stage "kubernetes tools (cached)" bash -c 'tests/lab/scripts/build-tools.sh >/dev/null'
stage "build binaries" cargo build --workspace --bins
stage "unit and property tests" cargo test --workspace --exclude ferrolb-e2e --exclude ferrolb-lab
stage "lab tests" cargo test -p ferrolb-lab -p ferrolb-e2e -- --test-threads=1
if [[ -x charts/ferrolb/test.sh ]]; then
    stage "chart tests" charts/ferrolb/test.sh
fi
if [[ -x image/build.sh && -x image/test.sh ]]; then
    stage "image build and test" bash -c 'image/build.sh && image/test.sh'
fi
target/debug/ferrolb-lab gc >/dev/null 2>&1 || true
report
