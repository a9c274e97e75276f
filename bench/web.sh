#!/usr/bin/env bash
# Sequential upload and download MiB/s through the web gateway (nimbus-web,
# HTTP on loopback, curl as the client) beside the FUSE mount's sequential
# write (dd conv=fsync) and read of the same file size, in the same run, on
# a dev cluster (3 meta, 3 data servers). Prints a table; keeps a copy in
# bench/results/.
#
#   bench/web.sh [--mib 1024]            # builds release binaries first
#   NIMBUS_BIN_DIR=DIR bench/web.sh      # uses the binaries in DIR as they are
set -euo pipefail
cd "$(dirname "$0")/.."
mib=1024
while [ $# -gt 0 ]; do
  case "$1" in
    --mib) mib="$2"; shift 2 ;;
    *) echo "usage: $0 [--mib N]" >&2; exit 2 ;;
  esac
done
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/nimbus/target}"
if [ -z "${NIMBUS_BIN_DIR:-}" ]; then
  echo "building release binaries (first time: several minutes)..." >&2
  cargo build --release -q -p nimbus-meta -p nimbus-data -p nimbus-fuse -p nimbus-web 2>/dev/null \
    || cargo build --release -q --workspace --bins
  NIMBUS_BIN_DIR="$CARGO_TARGET_DIR/release"
fi
bin="$NIMBUS_BIN_DIR"
work=$(mktemp -d /tmp/nimbus-bench-web.XXXXXX)
export NIMBUS_CONFIG_DIR="$work/config"
nimbus() { "$bin/nimbus" --dev-dir "$work/dev" "$@"; }
cleanup() {
  nimbus dev down --purge >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
nimbus dev up --mount "$work/mnt" >&2
url=$(nimbus dev status --json | sed -n 's/.*"url": "\(http[^"]*\)".*/\1/p' | head -1)
url=${url%/}
password=$(cat "$work/dev/admin.password")
[ -n "$url" ] || { echo "the dev cluster has no web gateway" >&2; exit 1; }

head -c "$((mib << 20))" /dev/urandom > "$work/src"
now() { date +%s.%N; }
rate() { awk -v m="$mib" -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", m / (b - a) }'; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }

# The mount (signed in as the administrator, whose home is the root).
t0=$(now); dd if="$work/src" of="$work/mnt/mount.bin" bs=1M conv=fsync status=none; t1=$(now)
mount_write=$(rate "$t0" "$t1")
drop_caches
t0=$(now); dd if="$work/mnt/mount.bin" of=/dev/null bs=1M status=none; t1=$(now)
mount_read=$(rate "$t0" "$t1")

# The gateway.
jar="$work/jar"
csrf=$(curl -s -c "$jar" -H 'Content-Type: application/json' \
  --data-binary "{\"user\":\"admin\",\"password\":\"$password\"}" "$url/api/login" \
  | sed -n 's/.*"csrf":"\([0-9a-f]*\)".*/\1/p')
t0=$(now)
curl -s -f -b "$jar" -H "X-CSRF-Token: $csrf" -T "$work/src" "$url/api/file/web.bin" >/dev/null
t1=$(now)
web_upload=$(rate "$t0" "$t1")
drop_caches
t0=$(now); curl -s -f -b "$jar" -o /dev/null "$url/api/file/web.bin"; t1=$(now)
web_download=$(rate "$t0" "$t1")
cmp "$work/src" "$work/mnt/web.bin"

mkdir -p bench/results
out="bench/results/web-$(date -u +%Y%m%dT%H%M%SZ).txt"
{
  echo "# $(date -u) on $(nproc) cores, $(uname -r); ${mib} MiB; binaries: $bin"
  printf "%-28s %10s %10s\n" "" "MiB/s" "of mount"
  printf "%-28s %10s\n" "mount write (dd conv=fsync)" "$mount_write"
  printf "%-28s %10s %9s%%\n" "gateway upload (curl -T)" "$web_upload" \
    "$(awk -v a="$web_upload" -v b="$mount_write" 'BEGIN { printf "%.0f", 100 * a / b }')"
  printf "%-28s %10s\n" "mount read (dd)" "$mount_read"
  printf "%-28s %10s %9s%%\n" "gateway download (curl)" "$web_download" \
    "$(awk -v a="$web_download" -v b="$mount_read" 'BEGIN { printf "%.0f", 100 * a / b }')"
} | tee "$out"
echo "saved to $out" >&2
