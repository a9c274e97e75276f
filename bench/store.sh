#!/usr/bin/env bash
# The meta server's namespace store (redb) on its own: a million records
# installed, read back, written at random, and written during checkpoint
# reads, with the time and resident memory of each (cache 256 MiB).
# Figures, not assertions; keeps a copy in bench/results/.
#
#   bench/store.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/nimbus/target}"
export TMPDIR="${TMPDIR:-/var/tmp}"
mkdir -p bench/results
out="bench/results/store-$(date -u +%Y%m%dT%H%M%SZ).txt"
cargo run --release -q -p nimbus-meta --example store_figures | tee "$out"
echo "saved to $out" >&2
