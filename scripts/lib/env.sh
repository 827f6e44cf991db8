# Shared setup for Darter's scripts: build caches outside the clone, and the
# system packages the build and tests need (installed only when missing).

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/darter/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
mkdir -p "$CARGO_TARGET_DIR"

# ensure_packages PKG... : apt-get install the Debian packages that are missing.
ensure_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "installing: ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# Build toolchain for RocksDB's C++ and its bindings; nginx and curl for tests
# and benchmarks; GNU time for peak RSS.
ensure_build_deps() {
  ensure_packages clang libclang-dev nginx-light curl time
}

# build_darter: sets DARTER to a release `darter` binary, building it unless
# DARTER_BIN names one already built.
build_darter() {
  if [ -z "${DARTER_BIN:-}" ]; then
    cargo build --release -q -p darter-agent --bin darter
  fi
  DARTER="${DARTER_BIN:-$CARGO_TARGET_DIR/release/darter}"
}
