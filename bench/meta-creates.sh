#!/usr/bin/env bash
# Metadata figures of a local 3-node nimbus-meta cluster (release build, TLS,
# every write fsynced on a majority), from 1 and from 32 concurrent clients,
# all from one run: this disk's fdatasync p50/p99 (the floor a commit stands
# on), creates/s and their latency as a multiple of that floor, reads
# (getattr)/s, and the CPU time of the three meta processes per 1,000
# operations (/proc/PID/stat). Prints a table; keeps a copy in bench/results/.
# Not part of the test suite: figures, not assertions.
#
#   bench/meta-creates.sh [--seconds N] [--clients 1,8,32]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/nimbus/target}"
echo "building release binaries (first time: several minutes)..." >&2
cargo build --release -q -p nimbus-meta -p nimbus-tests
mkdir -p bench/results
out="bench/results/meta-creates-$(date -u +%Y%m%dT%H%M%SZ).txt"
{
  echo "# $(date -u) on $(nproc) cores, $(uname -r)"
  "$CARGO_TARGET_DIR/release/nimbus-meta-bench" "$@"
} | tee "$out"
echo "saved to $out" >&2
