# Sourced by the other scripts: installs what the build needs and picks the target directory.
#
# RocksDB's C++ build takes ~14 minutes on two cores, so every script builds in the release
# profile only and shares one target directory outside the checkout: a fresh clone (CI's, for
# one) reuses the RocksDB build a previous run left there.
set -euo pipefail

if ! command -v cargo >/dev/null 2>&1 && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
  export PATH="${HOME:-/root}/.cargo/bin:$PATH"   # rustup's default, when not on PATH
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install a Rust toolchain (rustup) first" >&2
  exit 1
fi
# bindgen (librocksdb-sys) needs libclang and clang's headers: libclang-dev on Debian.
source "$(dirname "${BASH_SOURCE[0]}")/lib/libclang.sh"
if libclang_missing; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "libclang not found: install your distribution's libclang development package" >&2
    exit 1
  fi
  echo "installing libclang-dev (needed by the rocksdb crate's bindgen)" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libclang-dev >/dev/null
  if ! libclang_loadable /; then
    echo "libclang-dev is installed but no libclang.so was found for bindgen" >&2
    exit 1
  fi
fi
# The Redis store's tests start their own redis-server processes (and fail without one).
if ! command -v redis-server >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "installing redis-server (needed by the liveresults-redis tests)" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
elif ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server not found: the liveresults-redis tests will fail until it is installed" >&2
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${LIVERESULTS_TARGET_DIR:-/var/tmp/liveresults-target}}"
mkdir -p "$CARGO_TARGET_DIR"
