#!/usr/bin/env bash
# Single-link benchmark (not a test): `darter get` vs `curl` fetching the same
# file from Debian's nginx on loopback, cold cache each run. Prints wall time,
# throughput and peak RSS of both, side by side, with the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/env.sh
source scripts/lib/nginx.sh
ensure_build_deps
SIZE_MIB=${SIZE_MIB:-1024}
RUNS=${RUNS:-3}

build_darter
WORK=$(mktemp -d /tmp/darter-bench.XXXXXX)
trap 'stop_nginx; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/www"
head -c $((SIZE_MIB << 20)) /dev/urandom > "$WORK/www/blob.bin"
start_nginx "$WORK/www" "$WORK/nginx"
URL="http://127.0.0.1:$NGINX_PORT/blob.bin"

# measure NAME CMD...: appends "seconds max_rss_kib" to $WORK/NAME.
measure() {
  local name=$1; shift
  /usr/bin/time -f "%e %M" -o "$WORK/t" "$@" >/dev/null
  cat "$WORK/t" >> "$WORK/$name"
}

for i in $(seq "$RUNS"); do
  measure curl curl -fsS -o "$WORK/curl.out" "$URL"
  cmp -s "$WORK/curl.out" "$WORK/www/blob.bin" || { echo "curl output differs"; exit 1; }
  rm -f "$WORK/curl.out"; sync; sleep 1
  measure darter "$DARTER" --storage-dir "$WORK/storage" get "$URL" -O "$WORK/darter.out" --quiet
  cmp -s "$WORK/darter.out" "$WORK/www/blob.bin" || { echo "darter output differs"; exit 1; }
  rm -rf "$WORK/darter.out" "$WORK/storage"; sync; sleep 1
done

python3 - "$WORK" "$SIZE_MIB" "$RUNS" <<'PY'
import statistics, sys
work, size_mib, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def load(name):
    rows = [tuple(map(float, l.split())) for l in open(f"{work}/{name}") if l.strip()]
    return statistics.median(r[0] for r in rows), max(r[1] for r in rows) / 1024
ct, cr = load("curl"); dt, dr = load("darter")
print(f"single-link benchmark: {size_mib} MiB from nginx on loopback, median of {runs} cold runs")
print(f"{'':8} {'wall_s':>8} {'MiB/s':>8} {'peak_rss_MiB':>13}")
print(f"{'curl':8} {ct:8.2f} {size_mib/ct:8.0f} {cr:13.1f}")
print(f"{'darter':8} {dt:8.2f} {size_mib/dt:8.0f} {dr:13.1f}")
print(f"bench-get: darter_throughput/curl_throughput={ct/dt:.2f} darter_peak_rss_mib={dr:.1f} curl_peak_rss_mib={cr:.1f}")
PY
