#!/usr/bin/env bash
# Builds the ferrolb image (Containerfile at the top of the repository) with buildah and exports
# it as an OCI archive to target/image/ferrolb.oci.tar, tagged ghcr.io/ferrolb/ferrolb:<version>,
# the version being the Cargo workspace's (which is also the chart's appVersion and default tag).
#
# Steps: release-build the three binaries statically (glibc, +crt-static: no shared library is
# needed at run time, so the image can be FROM scratch) — the controller, the speaker and the
# kubectl plugin kubectl-ferrolb, so one image carries the plugin of the same version (copy it
# out with `kubectl cp` or `crane export`; `make plugin` builds it alone) — check that they are
# static and answer --version, stage them as the build context, build with buildah on vfs
# storage kept under target/image (no daemon, no registry, nothing run inside the image), push
# to an OCI archive. The static kubectl-ferrolb stays in target/x86_64-unknown-linux-gnu/release/.
#
# Environment:
#   FERROLB_BIN_DIR  use ferrolb-controller, ferrolb-speaker and kubectl-ferrolb from this
#                    directory instead of building them (CI that already built them; pipeline
#                    tests with stand-ins)
#   IMAGE_REPOSITORY default ghcr.io/ferrolb/ferrolb
#   CARGO            default cargo
# Needs root for buildah (installs Debian's buildah when it is missing).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

log() { printf 'image/build.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n 1)
[[ -n "$version" ]] || die "no version in [workspace.package] of Cargo.toml"
repository=${IMAGE_REPOSITORY:-ghcr.io/ferrolb/ferrolb}
image="$repository:$version"
target=x86_64-unknown-linux-gnu
out=$repo/target/image
archive=$out/ferrolb.oci.tar
binaries=(ferrolb-controller ferrolb-speaker kubectl-ferrolb)

# --- 1. The binaries ----------------------------------------------------------------------
if [[ -n "${FERROLB_BIN_DIR:-}" ]]; then
    bindir=$(cd "$FERROLB_BIN_DIR" && pwd)
    log "using prebuilt binaries from $bindir"
else
    bindir=$repo/target/$target/release
    log "building ${binaries[*]} $version (release, static, $target)"
    # The explicit --target keeps these objects apart from the ordinary target/release and lets
    # build scripts and proc macros (built for the host, not the target) stay dynamic.
    RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
        "${CARGO:-cargo}" build --release --target "$target" -p ferrolb-controller -p ferrolb-speaker \
        -p ferrolb-cli
fi

for bin in "${binaries[@]}"; do
    path=$bindir/$bin
    [[ -x "$path" ]] || die "$path is missing or not executable"
    # A static executable has no program interpreter and needs no shared library.
    if readelf -lW "$path" | grep -q 'Requesting program interpreter' \
        || readelf -dW "$path" 2>/dev/null | grep -q '(NEEDED)'; then
        die "$path is dynamically linked; a FROM scratch image needs it static (+crt-static)"
    fi
    reported=$("$path" --version 2>&1) || die "$path --version failed: $reported"
    [[ "$reported" == *"$version"* ]] || die "$path --version says '$reported', expected version $version"
    log "$bin: static, '$reported'"
done

# --- 2. The build context: exactly the files the Containerfile copies ------------------------
context=$out/context
rm -rf "$context"
mkdir -p "$context"
for bin in "${binaries[@]}"; do
    install -m 0555 "$bindir/$bin" "$context/$bin"
done

# --- 3. buildah ---------------------------------------------------------------------------
if ! command -v buildah >/dev/null 2>&1; then
    [[ $(id -u) -eq 0 ]] || die "buildah is missing; install it (apt-get install buildah) or run as root"
    log "installing buildah (Debian package)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends buildah >/dev/null \
        || { apt-get update >/dev/null && apt-get install -y --no-install-recommends buildah >/dev/null; } \
        || die "cannot install buildah"
fi

# Private vfs storage under target/: nothing outside the repository is touched, and every build
# starts empty, so the archive holds exactly this build.
storage=(--root "$out/storage" --runroot "$out/runroot" --storage-driver vfs)
rm -rf "$out/storage" "$out/runroot"
# No RUN step exists, so nothing is ever executed in a container; chroot isolation avoids
# needing a runtime or user namespaces for the little buildah does set up.
export BUILDAH_ISOLATION=chroot

# Layer and config timestamps come from the last commit, so the same commit gives the same image.
epoch=$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 0)

log "building $image"
buildah "${storage[@]}" bud \
    --format oci \
    --timestamp "$epoch" \
    --build-arg "VERSION=$version" \
    --file "$repo/Containerfile" \
    --tag "$image" \
    "$context" >&2

rm -f "$archive"
log "exporting $archive"
buildah "${storage[@]}" push --quiet "$image" "oci-archive:$archive:$image" >&2

# The staged copies and the storage are only inputs to the archive.
rm -rf "$out/storage" "$out/runroot" "$context"

size=$(stat -c %s "$archive")
log "done: $image -> $archive ($((size / 1024)) KiB)"
echo "$archive"
