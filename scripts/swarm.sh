#!/usr/bin/env bash
# The main job: a local swarm on loopback. An origin, the standalone scheduler
# and N agent daemons (each on its own 127.0.1.x address with its own storage
# and ports) fetch one blob at the same moment; darter-swarm prints per-agent
# times and bytes by source, and the summary line
#   swarm: agents=N blob_bytes=F origin_bytes=O last_s=T floor_s=T0 efficiency=T0/T
# Any darter-swarm flag can be passed, e.g. scripts/swarm.sh --agents 20 --blob-size 256MiB
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/env.sh
ensure_build_deps
cargo build --release -q --bins
exec "$CARGO_TARGET_DIR/release/darter-swarm" "$@"
