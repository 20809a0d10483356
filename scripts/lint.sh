#!/usr/bin/env bash
# The lint lanes CI runs before the tests: formatting, then clippy on every target of every
# crate in the one release profile the tests use (so RocksDB's C++ build is shared), and once
# more with the facade's `drasi` feature, which the workspace build leaves off (its example).
source "$(dirname "$0")/setup.sh"
cd "$(dirname "$0")/.."
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --release --workspace --all-targets -- -D warnings"
cargo clippy --release --workspace --all-targets -- -D warnings
echo "== cargo clippy --release -p liveresults --features drasi --all-targets -- -D warnings"
cargo clippy --release -p liveresults --features drasi --all-targets -- -D warnings
