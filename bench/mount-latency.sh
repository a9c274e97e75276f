#!/usr/bin/env bash
# Latency of single metadata operations through a Nimbus mount, one process,
# set against this disk's fdatasync measured in the same run (the floor a
# commit stands on: every change is fsynced on a majority of the meta
# servers). Starts the release build's dev cluster (`nimbus dev up`: 3 meta,
# 3 data servers, TLS) with a mount, and prints p50/p99 of mkdir, rmdir,
# create (open O_CREAT|O_EXCL, a 4 KiB write, close), unlink and a cold stat
# (the kernel's caches dropped and the mount's attribute time-to-live
# passed, so each stat asks the meta cluster), each also as a multiple of the
# fdatasync p50. Keeps a copy in bench/results/. Figures, not assertions; not
# part of the test suite.
#
#   bench/mount-latency.sh [--count N]     (default 500 of each; root, for
#                                            drop_caches)
set -euo pipefail
cd "$(dirname "$0")/.."
count=500
while [ $# -gt 0 ]; do
  case "$1" in
    --count) count="$2"; shift ;;
    -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
[ "$(id -u)" = 0 ] || { echo "run as root: a cold stat needs /proc/sys/vm/drop_caches" >&2; exit 2; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/nimbus/target}"
echo "building release binaries (first time: several minutes)..." >&2
cargo build --release -q -p nimbus-fuse -p nimbus-meta -p nimbus-data -p nimbus-web
BIN="$CARGO_TARGET_DIR/release"
work="$(mktemp -d /var/tmp/nimbus-mount-latency.XXXXXX)"
mnt="$work/mnt"
stop() {
  "$BIN/nimbus" dev down --dev-dir "$work/dev" >/dev/null 2>&1 || umount -l "$mnt" 2>/dev/null || true
  rm -rf "$work"
}
trap stop EXIT
echo "starting a dev cluster in $work..." >&2
"$BIN/nimbus" dev up --dev-dir "$work/dev" --mount "$mnt" >"$work/up.log" 2>&1 || {
  cat "$work/up.log" >&2
  exit 1
}
mkdir -p bench/results
out="bench/results/mount-latency-$(date -u +%Y%m%dT%H%M%SZ).txt"
{
  echo "# $(date -u) on $(nproc) cores, $(uname -r), release build of $(git rev-parse --short HEAD)"
  echo "dev cluster: 3 nimbus-meta, 3 nimbus-data, TLS; one process, sequential operations"
  if [ -n "${NIMBUS_CREATE_AT_OPEN:-}" ]; then
    echo "mount: NIMBUS_CREATE_AT_OPEN set: files created at open (create, then a commit at close)"
  else
    echo "mount: files created with their first commit (one commit per create+write+close)"
  fi
  python3 - "$work/dev" "$mnt/bench" "$count" <<'PY'
import os, sys, time

disk_dir, root, n = sys.argv[1], sys.argv[2], int(sys.argv[3])

def pct(ts, p):
    ts = sorted(ts)
    return ts[min(len(ts) - 1, int(len(ts) * p))]

# The floor: fdatasync of a 4 KiB write, on the disk the meta servers use.
probe = os.path.join(disk_dir, "fdatasync-probe")
fd = os.open(probe, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o600)
block = b"\xa5" * 4096
floor = []
for i in range(1000):
    os.pwrite(fd, block, (i % 256) * 4096)
    t = time.perf_counter()
    os.fdatasync(fd)
    floor.append((time.perf_counter() - t) * 1e6)
os.close(fd)
os.unlink(probe)
f50 = pct(floor, 0.5)
print(f"floor: fdatasync of a 4 KiB write on this disk, same run: p50 {f50:.0f} us, p99 {pct(floor, 0.99):.0f} us")
print(f"{'op':<10}{'count':>7}{'p50 us':>9}{'p99 us':>9}{'p50 x fl':>10}{'p99 x fl':>10}")

def timed(name, f):
    ts = []
    for i in range(n):
        t = time.perf_counter()
        f(i)
        ts.append((time.perf_counter() - t) * 1e6)
    p50, p99 = pct(ts, 0.5), pct(ts, 0.99)
    print(f"{name:<10}{n:>7}{p50:>9.0f}{p99:>9.0f}{p50 / f50:>10.1f}{p99 / f50:>10.1f}")

def create(name):
    fd = os.open(f"{root}/{name}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    os.write(fd, block)
    os.close(fd)

os.makedirs(root, exist_ok=True)
# Warm up (connections, the new cluster's first snapshots) before timing.
for i in range(100):
    os.mkdir(f"{root}/w{i}")
    create(f"w{i}/f")
    os.unlink(f"{root}/w{i}/f")
    os.rmdir(f"{root}/w{i}")
timed("mkdir", lambda i: os.mkdir(f"{root}/d{i}"))
timed("rmdir", lambda i: os.rmdir(f"{root}/d{i}"))

timed("create", lambda i: create(f"f{i}"))
time.sleep(1.5)  # past the mount's attribute time-to-live (1 s by default)
with open("/proc/sys/vm/drop_caches", "w") as f:
    f.write("3\n")
timed("stat cold", lambda i: os.stat(f"{root}/f{i}"))
timed("unlink", lambda i: os.unlink(f"{root}/f{i}"))
PY
  echo "targets (issue 16): mkdir p50 <= 5x floor, cold stat p50 <= 3x floor"
} | tee "$out"
echo "saved to $out" >&2
