#!/usr/bin/env bash
# liveresults serve against the Node reference Durable Streams server (@durable-streams/server
# 0.3.7, in memory and file-backed) and a do-nothing "client floor" server (floor_server.mjs) with
# the official client: builds the binary, installs the
# pinned npm packages here on first use, runs bench.mjs and prints a markdown table.
# BENCH_SINGLE sets the number of single-message writes (default 2000).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../../scripts/setup.sh"
(cd "$here/../.." && cargo build --release --bin liveresults)
if [ ! -d "$here/node_modules/@durable-streams/server" ]; then
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi
cd "$here"
LIVERESULTS_BIN="$CARGO_TARGET_DIR/release/liveresults" node bench.mjs
