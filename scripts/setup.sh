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
# apt_install PKG WHY: installs a Debian package (as root, or with sudo), or fails saying what
# to install where there is no apt-get.
apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "$1 not found ($2): install it with your distribution's package manager" >&2
    exit 1
  fi
  echo "installing $1 ($2)" >&2
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    # -n: fail at once with a clear message instead of waiting for a password in CI.
    sudo="sudo -n"
    if ! sudo -n true 2>/dev/null; then
      echo "$1 is missing ($2) and installing it needs root: run 'sudo apt-get install $1'" >&2
      exit 1
    fi
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$1" >/dev/null
}

# bindgen (librocksdb-sys) needs libclang and clang's headers: libclang-dev on Debian.
source "$(dirname "${BASH_SOURCE[0]}")/lib/libclang.sh"
if libclang_missing; then
  apt_install libclang-dev "needed by the rocksdb crate's bindgen"
  if ! libclang_loadable /; then
    echo "libclang-dev is installed but no libclang.so was found for bindgen" >&2
    exit 1
  fi
fi
# The Redis store's tests start their own redis-server processes (and fail without one); only
# the scripts that run tests ask for it (LIVERESULTS_TEST_SERVICES=1).
if [ "${LIVERESULTS_TEST_SERVICES:-0}" = 1 ] && ! command -v redis-server >/dev/null 2>&1; then
  apt_install redis-server "needed by the liveresults-redis tests"
fi
# The PostgreSQL store's tests start their own server from /usr/lib/postgresql/<major>/bin
# (not on PATH), or from LIVERESULTS_PG_BIN.
if [ "${LIVERESULTS_TEST_SERVICES:-0}" = 1 ] && [ -z "${LIVERESULTS_PG_BIN:-}" ] \
  && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  apt_install postgresql "needed by the liveresults-postgres tests"
fi
# The console's browser test (tests/console.rs) drives Debian's headless Chromium; asked of
# dpkg, not of the file system, so a half-removed package is installed again.
deb_installed() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}
if [ "${LIVERESULTS_TEST_SERVICES:-0}" = 1 ] && command -v dpkg-query >/dev/null 2>&1; then
  deb_installed chromium || apt_install chromium "needed by the console's browser test"
  deb_installed chromium-driver || apt_install chromium-driver "needed by the console's browser test"
fi
# The Durable Streams conformance suite (tests/durable_streams.rs) and the console's browser
# driver (tests/console.rs) run under Node.
if [ "${LIVERESULTS_TEST_SERVICES:-0}" = 1 ]; then
  command -v node >/dev/null 2>&1 || apt_install nodejs "needed by the Durable Streams conformance suite"
  command -v npm >/dev/null 2>&1 || apt_install npm "needed by the Durable Streams conformance suite"
  source "$(dirname "${BASH_SOURCE[0]}")/lib/node.sh"
  node_suite_install "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${LIVERESULTS_TARGET_DIR:-/var/tmp/liveresults-target}}"
mkdir -p "$CARGO_TARGET_DIR"
