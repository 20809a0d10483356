# Sourced by setup.sh when tests will run (LIVERESULTS_TEST_SERVICES=1): installs the pinned npm
# packages of the Durable Streams conformance suite (tests/durable_streams) and links them into
# the checkout as tests/durable_streams/node_modules, which tests/durable_streams.rs runs.
#
# The install lives outside the checkout, in a directory named after the lockfile's hash
# (under LIVERESULTS_NPM_DIR, default /var/tmp/liveresults-npm): a fresh clone (CI's) reuses
# it without touching the network, and a changed lockfile gets a new directory. It is built in
# a temporary directory and renamed into place, so two runs starting together never see a
# half-installed tree.

# node_suite_install REPO: installs (once per lockfile) and links the suite's node_modules.
node_suite_install() {
  local repo="$1"
  local suite="$repo/tests/durable_streams"
  local root="${LIVERESULTS_NPM_DIR:-/var/tmp/liveresults-npm}"
  local hash dir tmp
  hash="$(sha256sum "$suite/package-lock.json" | cut -c1-16)"
  dir="$root/durable-streams-$hash"
  if [ ! -f "$dir/.installed" ]; then
    echo "installing the Durable Streams conformance suite's npm packages into $dir" >&2
    mkdir -p "$root"
    tmp="$(mktemp -d "$root/.install.XXXXXX")"
    cp "$suite/package.json" "$suite/package-lock.json" "$tmp/"
    if ! (cd "$tmp" && npm ci --no-audit --no-fund --loglevel=error >&2); then
      rm -rf "$tmp"
      echo "npm ci failed for tests/durable_streams (network? registry?)" >&2
      return 1
    fi
    touch "$tmp/.installed"
    # Another run may have finished first: keep its copy and drop ours.
    mv -T "$tmp" "$dir" 2>/dev/null || rm -rf "$tmp"
  fi
  ln -sfn "$dir/node_modules" "$suite/node_modules"
}
