#!/usr/bin/env bash
# Ten million inodes in a local 3-node nimbus-meta cluster (release build,
# TLS): fills it through the client library with many concurrent clients
# (directories of 1,000 files), printing as it goes the inode count, the
# create rate and each meta node's resident memory, store size and snapshot
# times; then times a fourth node's catch-up from a snapshot and a restarted
# node's recovery, and compares stat/readdir of a cold directory with the
# same directory when the namespace was small. Keeps a copy in bench/results/.
# Not part of the test suite: figures, not assertions. Needs ~40 GB free
# under $TMPDIR (default /var/tmp) for 10 million inodes.
#
#   bench/meta-fill.sh [--inodes 10000000] [--clients 64] [--cache-mib 512]
#                      [--report-seconds 30] [--drop-caches]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/nimbus/target}"
export TMPDIR="${TMPDIR:-/var/tmp}"
echo "building release binaries (first time: several minutes)..." >&2
cargo build --release -q -p nimbus-meta -p nimbus-tests
export NIMBUS_BIN_DIR="$CARGO_TARGET_DIR/release"
mkdir -p bench/results
out="bench/results/meta-fill-$(date -u +%Y%m%dT%H%M%SZ).txt"
{
  echo "# $(date -u) on $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r); git $(git rev-parse --short HEAD)"
  echo "# nimbus-meta-fill $*"
  "$CARGO_TARGET_DIR/release/nimbus-meta-fill" "$@"
} 2>&1 | tee "$out"
echo "saved to $out" >&2
