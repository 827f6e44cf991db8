#!/usr/bin/env bash
# Runs Darter's whole test suite, installing what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/env.sh
ensure_build_deps
# The nginx integration test must run here, not skip.
export DARTER_REQUIRE_NGINX=1
cargo test --workspace --all-targets "$@"
