#!/usr/bin/env bash
# Block write/read MiB/s at R=1, 2 and 3 (and fsync'ed writes at R=2), and
# repair MiB/s after a data server dies, on a local cluster of 3 meta and 3
# data servers. Prints a table; keeps a copy in bench/results/.
#
#   bench/data-blocks.sh [--mib 256] [--parallel 4]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/nimbus/target}"
echo "building release binaries (first time: several minutes)..." >&2
cargo build --release -q -p nimbus-meta -p nimbus-data -p nimbus-tests
mkdir -p bench/results
out="bench/results/data-blocks-$(date -u +%Y%m%dT%H%M%SZ).txt"
{
  echo "# $(date -u) on $(nproc) cores, $(uname -r)"
  "$CARGO_TARGET_DIR/release/nimbus-data-bench" "$@"
} | tee "$out"
echo "saved to $out" >&2
