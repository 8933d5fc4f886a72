#!/usr/bin/env bash
# Build the serving image from scratch and get a prediction out of it, without a container
# engine or registry: debootstrap makes a Debian bookworm root (Python 3.11) as the base, buildah
# builds the Containerfile on it (chroot isolation, vfs storage) and runs the image's own entry
# point on the host network: --help, predict on a photo; then it serves from a read-only root
# until ready and answers one /v1/predict.
# The base is cached in buildah's storage between runs. Needs root, buildah and debootstrap.
set -euo pipefail
cd "$(dirname "$0")/../.."
export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot
BASE=localhost/apd-base:bookworm
IMAGE=localhost/ai-photo-detector:check
PORT=${APD_IMAGE_CHECK_PORT:-18765}
MIRROR=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
CA=/etc/ssl/certs/ca-certificates.crt
work=$(mktemp -d)
trap 'buildah rm --all >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
started=$SECONDS

if ! buildah inspect --type image "$BASE" >/dev/null 2>&1; then
  echo "image check: making the bookworm base with debootstrap ($MIRROR)"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,passwd \
    bookworm "$work/rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log"; exit 1; }
  base=$(buildah from scratch)
  buildah copy --quiet "$base" "$work/rootfs" / >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd python3 "$base"
  buildah commit --quiet "$base" "$BASE" >/dev/null
  buildah rm "$base" >/dev/null
  rm -rf "$work/rootfs"
fi

echo "image check: building the serving image"
# pip inside the build trusts this machine's CA bundle (the registry is reached through it).
buildah bud --quiet --layers --format docker --target serving --network host \
  --build-arg "BASE=$BASE" \
  --build-arg "PIP_CERT=$CA" --volume "$CA:$CA:ro" \
  -f Containerfile -t "$IMAGE" . >/dev/null
size=$(buildah images --format '{{.Size}}' "$IMAGE" | head -1)
echo "image check: built $IMAGE ($size)"

ctr=$(buildah from "$IMAGE")
config() {  # a field of the image's configuration, as the engine that runs it reads it
  buildah inspect --type image "$IMAGE" | python3 -c \
    'import json, sys; c = json.load(sys.stdin)["Docker"]["config"]; v = c.get(sys.argv[1]) or ""; print(" ".join(v) if isinstance(v, list) else v if isinstance(v, str) else json.dumps(v))' "$1"
}
entry=$(config Entrypoint)
user=$(config User)
[[ "$user" == 10001:10001 ]] || { echo "the image must run as uid 10001, not '$user'"; exit 1; }
config Healthcheck | grep -q "/v2/health/ready" || { echo "no HEALTHCHECK on readiness"; exit 1; }
# The test photo is bound in read-only (an image VOLUME would hide a copied file).
run() {
  buildah run --network host --user "$user" --volume "$PWD/tests/fixtures:/check:ro" "$ctr" -- "$@"
}

run $entry --help >"$work/help.txt"
grep "serve" "$work/help.txt" >/dev/null || { echo "--help does not list serve"; exit 1; }

run $entry predict --json /check/photo.jpg | tee "$work/predict.json"
grep -q '"band"' "$work/predict.json" || { echo "predict gave no verdict"; exit 1; }

# Serve from a read-only root: the image's root mounted read-only, /var/lib/apd and /tmp as
# the writable volumes a deployment gives it, the image's environment, uid 10001.
ro="$work/ro"
mkdir -p "$ro"
mount --bind "$(buildah mount "$ctr")" "$ro"
mount -o remount,bind,ro "$ro"
mount -t tmpfs -o uid=10001,gid=10001,mode=0700 tmpfs "$ro/var/lib/apd"
mount -t tmpfs -o mode=1777 tmpfs "$ro/tmp"
mount -t proc proc "$ro/proc"
mount --bind /dev "$ro/dev"
unmount() { umount "$ro/dev" "$ro/proc" "$ro/tmp" "$ro/var/lib/apd" "$ro" 2>/dev/null || true; }
trap 'unmount; buildah rm --all >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
if touch "$ro/opt/apd/probe" 2>/dev/null; then echo "the root is not read-only"; exit 1; fi
mapfile -t image_env < <(buildah inspect --type image "$IMAGE" \
  | python3 -c 'import json, sys; print("\n".join(json.load(sys.stdin)["Docker"]["config"]["Env"]))')
chroot --userspec=10001:10001 "$ro" /usr/bin/env -i "${image_env[@]}" \
  APD_SERVER__PORT="$PORT" APD_SERVER__HOST=127.0.0.1 \
  sh -c "cd /var/lib/apd && exec $entry serve" >"$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 1 120); do
  if python3 - "$PORT" <<'PY' 2>/dev/null; then break; fi
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/v2/health/ready", timeout=1)
PY
  sleep 1
done
python3 - "$PORT" tests/fixtures/photo.jpg <<'PY' || { cat "$work/serve.log"; exit 1; }
import json, sys, urllib.request
port, photo = sys.argv[1], sys.argv[2]
request = urllib.request.Request(
    f"http://127.0.0.1:{port}/v1/predict",
    data=open(photo, "rb").read(),
    headers={"Content-Type": "image/jpeg"},
)
answer = json.load(urllib.request.urlopen(request, timeout=30))
assert answer["band"] in {"ai", "real", "uncertain"}, answer
print("image check: served /v1/predict from a read-only root ->", answer["label"], answer["band"])
PY
kill "$server" 2>/dev/null || true
wait "$server" 2>/dev/null || true
pkill -f "ai-photo-detector worker" 2>/dev/null || true
echo "image check: passed in $((SECONDS - started)) s (image $size)"
