#!/usr/bin/env bash
# Runs Darter's whole test suite, installing what it needs first, and closes
# with one summary line over every test binary.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/env.sh
ensure_build_deps
# The nginx integration test must run here, not skip.
export DARTER_REQUIRE_NGINX=1
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# The swarm tests run the real daemon and scheduler binaries.
cargo build --workspace --bins 2>&1 | tail -n 1
cargo test --workspace --all-targets "$@" 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
