#!/usr/bin/env bash
# Runs the quickstart example (installs build dependencies on first use).
source "$(dirname "$0")/setup.sh"
exec cargo run --release --example quickstart
