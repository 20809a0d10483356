#!/usr/bin/env bash
# Runs the whole test suite (installs build dependencies on first use). Extra arguments go to
# `cargo test`, e.g. `scripts/test.sh -p liveresults-core`.
LIVERESULTS_TEST_SERVICES=1 source "$(dirname "$0")/setup.sh"
exec cargo test --release --workspace "$@"
