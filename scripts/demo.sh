#!/usr/bin/env bash
# The main job, until the swarm lands: a local origin (Debian's nginx on
# loopback) serves a generated blob, and `darter get` fetches it in pieces,
# resumes, repairs and reuses it, printing what it did at each step.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/env.sh
source scripts/lib/nginx.sh
ensure_build_deps
SIZE_MIB=${SIZE_MIB:-256}

build_darter
WORK=$(mktemp -d /tmp/darter-demo.XXXXXX)
trap 'stop_nginx; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/www" "$WORK/out"

echo "== origin: nginx on loopback serving a ${SIZE_MIB} MiB generated blob"
head -c $((SIZE_MIB << 20)) /dev/urandom > "$WORK/www/blob.bin"
WANT=$(sha256sum "$WORK/www/blob.bin" | cut -d' ' -f1)
start_nginx "$WORK/www" "$WORK/nginx"
URL="http://127.0.0.1:$NGINX_PORT/blob.bin"
d() { "$DARTER" --storage-dir "$WORK/storage" "$@"; }

echo; echo "== 1. cold download, verified against sha256:$WANT"
d get "$URL" -O "$WORK/out/first.bin" --digest "sha256:$WANT"

echo; echo "== 2. same URL again: served from local storage, no origin traffic"
d get "$URL" -O "$WORK/out/second.bin"

check() {
  for f in "$@"; do
    got=$(sha256sum "$WORK/out/$f.bin" | cut -d' ' -f1)
    if [ "$got" = "$WANT" ]; then echo "$f.bin: sha256 matches the origin"; else echo "$f.bin: MISMATCH"; exit 1; fi
  done
}
check first second
# Outputs on the storage filesystem are hard links to the cached content, so
# set them aside before damaging the cache on purpose.
rm -f "$WORK/out/first.bin" "$WORK/out/second.bin"

echo; echo "== 3. a stored piece is corrupted on disk; the next get detects it by CRC-32C and refetches only that piece"
CONTENT=$(d stat "$URL" | awk '/^content:/ {print $2}')
printf 'X' | dd of="$CONTENT" bs=1 seek=$((5 << 20)) conv=notrunc status=none
d get "$URL" -O "$WORK/out/third.bin"

echo; echo "== 4. interrupted download (SIGKILL) resumes with the pieces it already had"
URL2="$URL?attempt=2"
"$DARTER" --storage-dir "$WORK/storage" get "$URL2" -O "$WORK/out/fourth.bin" \
  --tag resume --rate-limit 100MiB/s --quiet &
PID=$!
sleep 1
kill -9 $PID 2>/dev/null && echo "killed darter (pid $PID) with SIGKILL mid-download"
wait $PID 2>/dev/null || true
d stat "$URL2" --tag resume | grep -E '^(state|pieces):' || true
d get "$URL2" -O "$WORK/out/fourth.bin" --tag resume

echo; echo "== local storage (darter ls)"
d ls

echo; echo "== outputs"
check third fourth
