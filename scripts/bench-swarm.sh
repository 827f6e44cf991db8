#!/usr/bin/env bash
# The swarm benchmark of issue 3: a 256 MiB blob to N = 20 and N = 50 agents at
# the same moment, each agent's upload and download capped, the origin's
# upload capped at the same rate. darter-swarm prints, per run, origin bytes /
# blob size, the time to the last agent and that time against the floor
# max(F/u_s, F/d_min, N*F/(u_s + sum u_i)). Caps are chosen so the swarm's
# total traffic (N x rate) stays well under what this 2-core VM moves on
# loopback; override with BW20 / BW50.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/env.sh
ensure_build_deps
cargo build --release -q --bins
SWARM="$CARGO_TARGET_DIR/release/darter-swarm"
for run in "20 ${BW20:-10MiB/s}" "50 ${BW50:-5MiB/s}"; do
  set -- $run
  echo "== N=$1, 256 MiB, agents and origin capped at $2"
  "$SWARM" --agents "$1" --blob-size 256MiB --agent-bandwidth "$2" --origin-bandwidth "$2" \
    | grep -E '^(origin bytes|swarm:)'
done
