#!/usr/bin/env bash
# Fuzzes the protocol decoders and the path validator for the given seconds (default 60).
# Runs on the stable toolchain; a crashing input is saved as fuzz-crash-*.bin.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release -q -p quicswarm-proto --example fuzz -- "${1:-60}" ${2:+"$2"}
