# Sourced by setup.sh when tests will run (LIVERESULTS_TEST_SERVICES=1): installs the pinned npm
# packages of the Node suites the Rust tests run — the Durable Streams conformance suite
# (tests/durable_streams, run by tests/durable_streams.rs) and the console's browser driver
# (tests/console, puppeteer-core without a browser download, run by tests/console.rs) — and
# links each into the checkout as <suite>/node_modules.
#
# Each install lives outside the checkout, in a directory named after the suite and its
# lockfile's hash (under LIVERESULTS_NPM_DIR, default /var/tmp/liveresults-npm): a fresh clone
# (CI's) reuses it without touching the network, and a changed lockfile gets a new directory.
# It is built in a temporary directory and renamed into place, so two runs starting together
# never see a half-installed tree.

# node_suite_install REPO: installs (once per lockfile) and links every suite's node_modules.
node_suite_install() {
  node_dir_install "$1/tests/durable_streams" durable-streams
  # PUPPETEER_SKIP_DOWNLOAD: the browser is Debian's chromium, never a downloaded build.
  PUPPETEER_SKIP_DOWNLOAD=1 node_dir_install "$1/tests/console" console
}

# node_dir_install SUITE NAME: installs (once per lockfile) and links SUITE's node_modules.
node_dir_install() {
  local suite="$1"
  local root="${LIVERESULTS_NPM_DIR:-/var/tmp/liveresults-npm}"
  local hash dir tmp
  hash="$(sha256sum "$suite/package-lock.json" | cut -c1-16)"
  dir="$root/$2-$hash"
  if [ ! -f "$dir/.installed" ]; then
    echo "installing the npm packages of $suite into $dir" >&2
    mkdir -p "$root"
    tmp="$(mktemp -d "$root/.install.XXXXXX")"
    cp "$suite/package.json" "$suite/package-lock.json" "$tmp/"
    if ! (cd "$tmp" && npm ci --no-audit --no-fund --loglevel=error >&2); then
      rm -rf "$tmp"
      echo "npm ci failed for $suite (network? registry?)" >&2
      return 1
    fi
    touch "$tmp/.installed"
    # Another run may have finished first: keep its copy and drop ours.
    mv -T "$tmp" "$dir" 2>/dev/null || rm -rf "$tmp"
  fi
  ln -sfn "$dir/node_modules" "$suite/node_modules"
}
