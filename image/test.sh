#!/usr/bin/env bash
# Checks the OCI archive written by image/build.sh without a container runtime (none can run
# here): unpacks the archive and its layers with tar, reads index, manifest and config with
# python3's json, and checks the reference, the digests, the size bound, the non-root user and
# entrypoint, that the filesystem holds the three binaries (controller, speaker and the kubectl
# plugin kubectl-ferrolb) and nothing else (so no shell and no package manager), and runs each
# one's --version from the unpacked root filesystem: with chroot as the image's user when they
# are static, else through the loader packaged in it.
#
# Usage: image/test.sh [ARCHIVE]   (default target/image/ferrolb.oci.tar)
# Prints one line per check and "N passed, M failed" last; exits non-zero on any failure.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
archive=${1:-$repo/target/image/ferrolb.oci.tar}
max_bytes=$((40 * 1024 * 1024))
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n 1)
want_ref="ghcr.io/ferrolb/ferrolb:$version"
binaries=(ferrolb-controller ferrolb-speaker kubectl-ferrolb)

# shellcheck source=../tests/lib/checks.sh
source "$repo/tests/lib/checks.sh"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [[ ! -f "$archive" ]]; then
    bad "OCI archive exists at $archive (build it with image/build.sh)"
    finish
    exit
fi
layout=$tmp/layout
rootfs=$tmp/rootfs
mkdir -p "$layout" "$rootfs"
if out=$(tar -xf "$archive" -C "$layout" 2>&1) && [[ -f "$layout/oci-layout" && -f "$layout/index.json" ]]; then
    ok "archive unpacks to an OCI layout (oci-layout, index.json)"
else
    bad "archive unpacks to an OCI layout (oci-layout, index.json)" "$out"
    finish
    exit
fi

# Everything the checks need from the JSON documents, as shell assignments. python3 also checks
# that every blob's sha256 equals its digest and the declared sizes.
if ! facts=$(python3 - "$layout" "$want_ref" <<'PY'
import hashlib, json, os, shlex, sys

layout, want_ref = sys.argv[1], sys.argv[2]
problems = []

def blob(desc):
    algo, _, hexdigest = desc["digest"].partition(":")
    path = os.path.join(layout, "blobs", algo, hexdigest)
    with open(path, "rb") as f:
        data = f.read()
    if algo != "sha256" or hashlib.sha256(data).hexdigest() != hexdigest:
        problems.append(f"blob {desc['digest']} does not match its digest")
    if len(data) != desc.get("size", -1):
        problems.append(f"blob {desc['digest']} is {len(data)} bytes, descriptor says {desc.get('size')}")
    return path, data

with open(os.path.join(layout, "oci-layout")) as f:
    layout_version = json.load(f).get("imageLayoutVersion", "")
with open(os.path.join(layout, "index.json")) as f:
    index = json.load(f)
manifests = index.get("manifests", [])
refs = [m.get("annotations", {}).get("org.opencontainers.image.ref.name", "") for m in manifests]
chosen = next((m for m, r in zip(manifests, refs) if r == want_ref), manifests[0] if manifests else None)
if chosen is None:
    print("echo 'index.json lists no manifest' >&2; exit 1")
    sys.exit(0)
_, mdata = blob(chosen)
manifest = json.loads(mdata)
_, cdata = blob(manifest["config"])
config = json.loads(cdata)
cfg = config.get("config", {})
layers = []
total = len(mdata) + len(cdata)
for layer in manifest.get("layers", []):
    path, data = blob(layer)
    total += len(data)
    layers.append(f"{layer['mediaType']}={path}")

out = {
    "layout_version": layout_version,
    "manifest_count": str(len(manifests)),
    "refs": " ".join(refs),
    "os_arch": f"{config.get('os')}/{config.get('architecture')}",
    "user": cfg.get("User", ""),
    "entrypoint": json.dumps(cfg.get("Entrypoint")),
    "cmd": json.dumps(cfg.get("Cmd")),
    "label_version": cfg.get("Labels", {}).get("org.opencontainers.image.version", ""),
    "total_bytes": str(total),
    "problems": "\n".join(problems),
}
for key, value in out.items():
    print(f"{key}={shlex.quote(value)}")
print("layers=(" + " ".join(shlex.quote(l) for l in layers) + ")")
PY
); then
    bad "index, manifest and config parse as JSON"
    finish
    exit
fi
# Assigned by eval from the python output above; declared here so a missing key reads as empty.
layout_version="" manifest_count="" refs="" os_arch="" user="" entrypoint="" cmd="" label_version=""
total_bytes=0 problems="" layers=()
eval "$facts"
ok "index, manifest and config parse as JSON (layout $layout_version, $manifest_count manifest(s))"

if [[ -z "$problems" ]]; then ok "every blob matches its digest and size"; else bad "every blob matches its digest and size" "$problems"; fi
if [[ " $refs " == *" $want_ref "* ]]; then ok "reference is $want_ref"; else bad "reference is $want_ref" "found: $refs"; fi
if [[ "$os_arch" == linux/amd64 ]]; then ok "platform is linux/amd64"; else bad "platform is linux/amd64" "found $os_arch"; fi
archive_bytes=$(stat -c %s "$archive")
if ((total_bytes < max_bytes && archive_bytes < max_bytes)); then
    ok "image is under $((max_bytes / 1024 / 1024)) MiB ($((total_bytes / 1024)) KiB in blobs, archive $((archive_bytes / 1024)) KiB)"
else
    bad "image is under $((max_bytes / 1024 / 1024)) MiB" "blobs: $total_bytes bytes, archive: $archive_bytes bytes"
fi
uid=${user%%:*}
if [[ -n "$user" && "$uid" =~ ^[0-9]+$ && "$uid" -ne 0 ]]; then
    ok "config runs as a numeric non-root user ($user)"
else
    bad "config runs as a numeric non-root user" "User is '$user'"
fi
if [[ "$entrypoint" == '["/ferrolb-controller"]' ]]; then ok "entrypoint is /ferrolb-controller"; else bad "entrypoint is /ferrolb-controller" "found $entrypoint"; fi
# No Cmd: the chart passes its own args, and anything after the image name goes to the entrypoint.
if [[ "$cmd" == null || "$cmd" == "[]" ]]; then ok "no default Cmd"; else bad "no default Cmd" "found $cmd"; fi
if [[ "$label_version" == "$version" ]]; then ok "version label is $version"; else bad "version label is $version" "found '$label_version'"; fi

# --- The root filesystem --------------------------------------------------------------------
unpacked=1
listing=""
for layer in "${layers[@]}"; do
    media=${layer%%=*}
    path=${layer#*=}
    case "$media" in
        *tar+gzip) flags=-xzf; listflags=-tvzf ;;
        *tar+zstd) flags="--zstd -xf"; listflags="--zstd -tvf" ;;
        *tar) flags=-xf; listflags=-tvf ;;
        *) bad "layer media type $media is a tar"; unpacked=0; continue ;;
    esac
    # shellcheck disable=SC2086 # the flags are meant to split
    listing+=$(tar $listflags "$path")$'\n'
    # shellcheck disable=SC2086
    if ! out=$(tar $flags "$path" -C "$rootfs" --no-same-owner 2>&1); then
        bad "layer $path unpacks" "$out"
        unpacked=0
    fi
done
((unpacked)) && ok "${#layers[@]} layer(s) unpack"

files=$(cd "$rootfs" && find . -mindepth 1 ! -type d | sed 's|^\./|/|' | sort)
expected=$(printf '/%s\n' "${binaries[@]}" | sort)
if [[ "$files" == "$expected" ]]; then
    ok "the filesystem holds exactly $(tr '\n' ' ' <<<"$expected")"
else
    bad "the filesystem holds exactly ${#binaries[@]} binaries" "$(diff <(echo "$expected") <(echo "$files"))"
fi
found=$(cd "$rootfs" && find . \( -name sh -o -name bash -o -name ash -o -name dash -o -name busybox \
    -o -name apt -o -name apt-get -o -name dpkg -o -name apk -o -name yum -o -name dnf -o -name rpm \
    -o -name microdnf -o -name pip -o -name pip3 \) -print)
if [[ -z "$found" ]]; then ok "no shell and no package manager inside"; else bad "no shell and no package manager inside" "$found"; fi
# Owned by root and not writable by anyone: the non-root user cannot replace them.
if ! awk -v bins="${binaries[*]}" '
        BEGIN { n = split(bins, b, " "); for (i = 1; i <= n; i++) want[b[i]] = 1 }
        NF >= 6 {
            name = $NF; sub(/^\.?\//, "", name)
            if (name in want) { seen[name] = 1; if ($1 !~ /^-r.x.-x.-x$/ || $2 != "0/0") bad = bad $0 "\n" }
        }
        END { for (k in want) if (!(k in seen)) bad = bad "missing " k "\n"; printf "%s", bad; exit (bad != "") }
    ' <<<"$listing" >"$tmp/modes"; then
    bad "binaries are root-owned, executable and read-only (0555, 0/0)" "$(cat "$tmp/modes")"
else
    ok "binaries are root-owned, executable and read-only (0555, 0/0)"
fi

# --- The binaries run from the unpacked image ----------------------------------------------
for bin in "${binaries[@]}"; do
    path=$rootfs/$bin
    [[ -x "$path" ]] || { bad "$bin --version (missing)"; continue; }
    if ! readelf -lW "$path" | grep -q 'Requesting program interpreter'; then
        if [[ $(id -u) -eq 0 ]]; then
            how="chroot, as uid 65532"
            out=$(timeout 20 chroot --userspec=65532:65532 "$rootfs" "/$bin" --version 2>&1)
        else
            how="static, run directly (not root: no chroot)"
            out=$(timeout 20 "$path" --version 2>&1)
        fi
    else
        # Dynamic: run it with the loader and libraries shipped in the image, never the host's.
        loader=$(find "$rootfs" -name 'ld-linux-x86-64.so.2' | head -n 1)
        if [[ -z "$loader" ]]; then
            bad "$bin --version: dynamically linked but no loader in the image"
            continue
        fi
        libpath=$(find "$rootfs" -name '*.so*' -printf '%h\n' | sort -u | paste -sd:)
        how="through the packaged loader"
        out=$(timeout 20 "$loader" --library-path "$libpath" "$path" --version 2>&1)
    fi
    rc=$?
    if [[ $rc -eq 0 && "$out" == *"$version"* ]]; then
        ok "$bin --version from the image ($how): $out"
    else
        bad "$bin --version from the image ($how) prints the version $version" "exit $rc: $out"
    fi
done

# The plugin is a kubectl plugin, not an entrypoint: it must still run from the image and know
# its commands (kubectl runs `kubectl-ferrolb` found on PATH for `kubectl ferrolb`).
plugin=$rootfs/kubectl-ferrolb
if [[ -x "$plugin" ]] && ! readelf -lW "$plugin" | grep -q 'Requesting program interpreter'; then
    if [[ $(id -u) -eq 0 ]]; then
        out=$(timeout 20 chroot --userspec=65532:65532 "$rootfs" /kubectl-ferrolb --help 2>&1)
    else
        out=$(timeout 20 "$plugin" --help 2>&1)
    fi
    rc=$?
    if [[ $rc -eq 0 && "$out" == *"kubectl ferrolb"* && "$out" == *trace* && "$out" == *status* && "$out" == *doctor* && "$out" == *migrate* ]]; then
        ok "kubectl-ferrolb --help from the image names trace, status, doctor and migrate"
    else
        bad "kubectl-ferrolb --help from the image names its commands" "exit $rc: $out"
    fi
else
    bad "kubectl-ferrolb in the image is a static executable"
fi

finish
