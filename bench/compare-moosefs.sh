#!/usr/bin/env bash
# Nimbus against MooseFS on this one machine: the same workloads on a Nimbus
# mount (dev cluster: 3 meta + 3 data servers on 127.0.0.1, R=2) and on a
# MooseFS mount (Debian's packages: a master and 3 chunkservers on a loopback
# address, goal 2), then a table of both figures and their ratio. Keeps the
# table, the raw outputs and the machine description in bench/results/.
# Not part of the test suite: figures, not assertions. Run as root (FUSE
# mounts, drop_caches, MooseFS daemons, a loopback address).
#
#   bench/compare-moosefs.sh [--quick] [--size 2G] [--files 10000] ...
#   SIZE=256M FILES=1000 bench/compare-moosefs.sh --quick
#   bench/compare-moosefs.sh --help
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/nimbus/target}"

usage() {
  cat <<'EOF'
Usage: bench/compare-moosefs.sh [OPTIONS]

Brings up, side by side on this machine:
  - Nimbus: the release build's dev cluster (`nimbus dev up`: 3 nimbus-meta and
    3 nimbus-data on 127.0.0.1, TLS on, replication 2 = the cluster default)
    mounted with `nimbus mount`;
  - MooseFS: Debian's moosefs-master, 3 moosefs-chunkserver (each with its own
    data directory under WORK_DIR, like Nimbus's data servers) and mfsmount,
    goal 2, trash time 0, all inside a network namespace this script creates
    and deletes: mfschunkserver refuses 127.0.0.0/8 for its master, so the
    servers and mfsmount's network side live in that namespace, on MFS_IP
    (from the benchmarking range 198.18.0.0/15) on its own lo; nothing of
    theirs can reach a real network. The mount itself is in the machine's
    mount namespace, where the workloads run. Debian runs the MooseFS daemons and
    mfsmount at nice -19: here they run at 0, like Nimbus's processes;
and runs each workload on the Nimbus mount, then on the MooseFS mount:
  fio    sequential write of SIZE in 1 MiB blocks (buffered, end_fsync=1) MiB/s
  fio    sequential read of that file, cold cache                        MiB/s
  fio    4 KiB random reads of it, RAND_JOBS jobs for RAND_SECONDS, cold  IOPS
  files  FILES small files (FILE_SIZE bytes, FILES_PER_DIR a directory):
         create, stat, read, delete (cold cache before each phase)     files/s
  dirs   DIRS directories in one directory: mkdir, list (readdir + stat
         of each, cold cache), rmdir                                     dirs/s
  tar    extraction of a tarball of TAR_SRC (made once on local disk)  seconds
  dbench DBENCH_CLIENTS clients for DBENCH_SECONDS (client.txt load)       MB/s
Caches are dropped (echo 3 > /proc/sys/vm/drop_caches) before every read
phase. Prints a table (Nimbus, MooseFS, Nimbus/MooseFS ratio, and whether
higher or lower is better) and saves it, the raw outputs, the machine
description and the load during each workload to
bench/results/compare-moosefs-<UTC time>[-quick].txt.
A workload that fails is FAIL in the table, with its error under Failures;
a mount that crashes or stops answering (aborted after 2 x WORKLOAD_TIMEOUT
+ 120 s) makes that side's remaining workloads n/a. The Nimbus logs of the
dev directory (mount.log first) are then appended to the results file.

Options (each also an environment variable; options win over variables):
  --quick                quick run: SIZE=256M FILES=1000 DIRS=200 RAND_SECONDS=10
                         DBENCH_SECONDS=15 (variables set in the environment win)
  --size SIZE            fio file size, fio syntax (256M, 2G)            [2G]
  --files N              small files                                   [10000]
  --dirs N               directories                                    [2000]
  --rand-seconds N       random-read run time                             [30]
  --dbench-seconds N     dbench run time                                  [60]
  --only nimbus|moosefs  run one side only (no ratios)
  --no-build             use the binaries in $CARGO_TARGET_DIR/release as they are
  --keep                 keep the work directory (cluster state, logs) at the end
  -h, --help             this text
Other variables: FILE_SIZE [4096], FILES_PER_DIR [1000], RAND_JOBS [4],
  DBENCH_CLIENTS [4], TAR_SRC [/usr/share/doc], WORK_DIR [/var/tmp] (where
  both clusters keep their data), MFS_IP [198.18.0.1] (must be, or become, an
  address of lo), MFS_PORT [19419] (master: this and the next 2 ports,
  chunkservers: the 3 after), MFS_HDD_SIZE [none] (a cap per chunkserver,
  e.g. 8GiB: only on a file system of its own, since MooseFS counts every
  used byte of the file system against the cap),
  MFS_FSYNC [0] (1: chunkservers fsync chunks before close, like Nimbus data
  servers do on fsync), WORKLOAD_TIMEOUT [1800] (seconds per command).

Packages (installed with apt-get when missing): moosefs-master,
moosefs-chunkserver, moosefs-client, moosefs-cli, fio, dbench, jq, fuse3.
EOF
}

# ---------------------------------------------------------------- arguments
quick=0 only=both build=1 keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --size) SIZE="$2"; shift ;;
    --files) FILES="$2"; shift ;;
    --dirs) DIRS="$2"; shift ;;
    --rand-seconds) RAND_SECONDS="$2"; shift ;;
    --dbench-seconds) DBENCH_SECONDS="$2"; shift ;;
    --only) only="$2"; shift ;;
    --no-build) build=0 ;;
    --keep) keep=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$only" in both | nimbus | moosefs) ;; *) echo "--only nimbus|moosefs" >&2; exit 2 ;; esac
if [ "$quick" = 1 ]; then
  : "${SIZE:=256M}" "${FILES:=1000}" "${DIRS:=200}" "${RAND_SECONDS:=10}" "${DBENCH_SECONDS:=15}"
fi
: "${SIZE:=2G}" "${FILES:=10000}" "${DIRS:=2000}" "${RAND_SECONDS:=30}" "${DBENCH_SECONDS:=60}"
: "${FILE_SIZE:=4096}" "${FILES_PER_DIR:=1000}" "${RAND_JOBS:=4}" "${DBENCH_CLIENTS:=4}"
: "${TAR_SRC:=/usr/share/doc}" "${WORK_DIR:=/var/tmp}" "${WORKLOAD_TIMEOUT:=1800}"
: "${MFS_IP:=198.18.0.1}" "${MFS_PORT:=19419}" "${MFS_HDD_SIZE:=}" "${MFS_FSYNC:=0}"
size_bytes=$(numfmt --from=iec "${SIZE%B}") || { echo "bad --size $SIZE" >&2; exit 2; }
for v in FILES DIRS RAND_SECONDS DBENCH_SECONDS FILE_SIZE FILES_PER_DIR RAND_JOBS DBENCH_CLIENTS MFS_PORT; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "$v must be a positive integer, not '${!v}'" >&2; exit 2; }
done

# ------------------------------------------------------------------ helpers
say() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "error: $*"; exit 1; }
# Runs a workload command with a time limit (a hung mount must not hang the run).
limit() {
  local rc=0
  timeout -k 30 "$WORKLOAD_TIMEOUT" "$@" || rc=$?
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then echo "timed out after $WORKLOAD_TIMEOUT s: $*" >&2; fi
  return "$rc"
}
# Flushes the file system of $1 and drops the page, dentry and inode caches.
drop_caches() {
  timeout 300 sync -f "$1" || true
  if ! echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
    [ -n "${warned_drop:-}" ] || say "warning: cannot drop caches (not root?): read figures are warm"
    warned_drop=1
  fi
}

# Aborts the FUSE connection of mountpoint $1: the way out when its daemon
# hangs with a request in hand (the caller then waits unkillably in the kernel).
# Found from /proc/self/mountinfo: a stat of a hung mount would hang too.
abort_fuse() {
  local dev ctl=/sys/fs/fuse/connections
  dev=$(awk -v m="$1" '$5 == m { d = $3 } END { print d }' /proc/self/mountinfo)
  [ -n "$dev" ] || return 0
  if ! mountpoint -q "$ctl" && mount -t fusectl fusectl "$ctl" 2>/dev/null; then
    touch "$W/fusectl-mounted"
  fi
  echo 1 >"$ctl/${dev#*:}/abort" 2>/dev/null || umount -l "$1" 2>/dev/null || true
}
is_mounted() { awk -v m="$1" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo; }
# Mounted, and its root answers within 20 s (not crashed, not hung).
mount_ok() {
  is_mounted "$1" || return 1
  stat -t "$1" >/dev/null 2>&1 &
  local pid=$! i
  for ((i = 0; i < 80; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid"
      return
    fi
    sleep 0.25
  done
  return 1
}

[ "$(id -u)" = 0 ] || die "run as root: FUSE mounts, MooseFS daemons, drop_caches, an address on lo"
need=()
for p in fio:fio dbench:dbench jq:jq fusermount3:fuse3 mfsmaster:moosefs-master \
  mfschunkserver:moosefs-chunkserver mfsmount:moosefs-client mfscli:moosefs-cli; do
  command -v "${p%%:*}" >/dev/null || need+=("${p#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Debian's moosefs packages install but never start the daemons; we run our own.
dbench_load=/usr/share/dbench/client.txt
[ -f "$dbench_load" ] || die "$dbench_load missing (package dbench)"
[ -d "$TAR_SRC" ] || die "TAR_SRC $TAR_SRC is not a directory"
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3) || die "python3 needed for the small-file workloads"

BIN="$CARGO_TARGET_DIR/release"
if [ "$only" != moosefs ]; then
  if [ "$build" = 1 ]; then
    say "building Nimbus (release; waits for other cargo builds holding the lock)..."
    cargo build --release --workspace --bins -q
  fi
  [ -x "$BIN/nimbus" ] || die "$BIN/nimbus missing: build first or drop --no-build"
fi

# ---------------------------------------------------------------- work area
mkdir -p bench/results "$WORK_DIR"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
suffix="" quick_note=""
if [ "$quick" = 1 ]; then suffix=-quick quick_note=" (--quick)"; fi
out="bench/results/compare-moosefs-$stamp$suffix.txt"
W=$(realpath "$(mktemp -d "$WORK_DIR/nimbus-vs-moosefs.XXXXXX")")
LOGS="$W/logs"
# Each side keeps its fio file twice (R=2, goal 2), both at once; then the
# tarball, dbench's files.
free_kib=$(df -Pk "$W" | awk 'NR == 2 { print $4 }')
if [ $((free_kib * 1024)) -lt $((size_bytes * 4 + (4 << 30))) ]; then
  echo "not enough free space under $WORK_DIR for SIZE=$SIZE (set WORK_DIR)" >&2
  rm -rf "$W"
  exit 1
fi
mkdir -p "$LOGS"
NDEV="$W/nimbus-dev" NMNT="$W/nimbus-mnt"
MDIR="$W/moosefs" MMNT="$W/moosefs-mnt"
nimbus_up=0 netns="" mfs_mount_pid="" mfs_master_pid=""
mfs_cs_pids=()

stop_pid() { # pid seconds: SIGTERM, wait, SIGKILL
  local pid=$1 secs=$2 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid" 2>/dev/null || true
  for ((i = 0; i < secs * 4; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
  say "pid $pid did not stop in $secs s: SIGKILL"
  kill -9 "$pid" 2>/dev/null || true
}

nimbus_down() {
  [ "$nimbus_up" = 1 ] || return 0
  # Keep the logs (mount.log above all) before --purge deletes them.
  mkdir -p "$LOGS/nimbus-dev"
  cp "$NDEV"/*.log "$LOGS/nimbus-dev/" 2>/dev/null || true
  say "stopping the Nimbus dev cluster"
  timeout 120 "$BIN/nimbus" dev down --dev-dir "$NDEV" --purge >&2 || {
    say "nimbus dev down failed; unmounting lazily"
    umount -l "$NMNT" 2>/dev/null || true
  }
  nimbus_up=0
}

mfs_down() {
  if [ -n "$mfs_mount_pid" ]; then
    say "unmounting MooseFS"
    if is_mounted "$MMNT"; then
      timeout 60 umount "$MMNT" 2>/dev/null || umount -l "$MMNT" 2>/dev/null || true
    fi
    stop_pid "$mfs_mount_pid" 30
    mfs_mount_pid=""
  fi
  local pid
  if [ -n "$mfs_master_pid" ]; then say "stopping the MooseFS chunkservers and master"; fi
  for pid in "${mfs_cs_pids[@]}"; do stop_pid "$pid" 60; done
  mfs_cs_pids=()
  if [ -n "$mfs_master_pid" ]; then
    stop_pid "$mfs_master_pid" 60 # it saves its metadata first
    mfs_master_pid=""
  fi
  if [ -n "$netns" ]; then
    ip netns del "$netns" 2>/dev/null || true
    netns=""
  fi
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM HUP
  nimbus_down
  mfs_down
  if [ -f "$W/fusectl-mounted" ]; then umount /sys/fs/fuse/connections 2>/dev/null; fi
  if [ "$keep" = 1 ]; then
    say "work directory kept: $W"
  else
    rm -rf "$W"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# ------------------------------------------------------------- the clusters
start_nimbus() {
  say "starting the Nimbus dev cluster in $NDEV, mount at $NMNT"
  nimbus_up=1
  "$BIN/nimbus" dev up --dev-dir "$NDEV" --mount "$NMNT" 2>&1 | tee "$LOGS/nimbus-up.txt" >&2
  mountpoint -q "$NMNT" || die "Nimbus did not mount at $NMNT"
  "$BIN/nimbus" dev status --dev-dir "$NDEV" >>"$LOGS/nimbus-up.txt" 2>&1 || true
  "$BIN/nimbus" status --dev-dir "$NDEV" >>"$LOGS/nimbus-up.txt" 2>&1 || true
}

# MooseFS's network: a namespace of our own with only a loopback device,
# carrying MFS_IP (127.0.0.0/8 is refused by mfschunkserver for the master
# address). Its processes enter it with in_ns; only their network is
# there, their files and the FUSE mount are the machine's.
mfs_network() {
  netns="nimbus-moosefs-$$"
  ip netns add "$netns" || die "cannot create network namespace $netns (ip netns needs root)"
  ip -n "$netns" link set lo up
  ip -n "$netns" addr add "$MFS_IP/32" dev lo || die "cannot add $MFS_IP to lo in $netns"
}

# Background launches call nsenter directly (it execs the program, so $! is
# the program's pid, which cleanup stops); a function would run in a
# subshell whose pid is not the server's.
in_ns() { nsenter --net="/run/netns/$netns" "$@"; }

wait_listen() { # addr:port seconds
  local i
  for ((i = 0; i < $2 * 4; i++)); do
    in_ns ss -ltnH | awk '{print $4}' | grep -qxF "$1" && return 0
    sleep 0.25
  done
  return 1
}

start_moosefs() {
  # A fresh namespace: its ports are all free.
  mfs_network
  say "starting MooseFS (master + 3 chunkservers on $MFS_IP in network namespace $netns, ports $MFS_PORT-$((MFS_PORT + 5)))"
  local m="$MDIR/master" cl=$((MFS_PORT + 2)) i d
  mkdir -p "$m" "$MMNT"
  cat >"$m/mfsmaster.cfg" <<EOF
WORKING_USER = root
WORKING_GROUP = root
# Debian's default is -19 (above every other process): same footing as Nimbus.
NICE_LEVEL = 0
DATA_PATH = $m
EXPORTS_FILENAME = $m/mfsexports.cfg
TOPOLOGY_FILENAME = $m/mfstopology.cfg
MATOML_LISTEN_HOST = $MFS_IP
MATOML_LISTEN_PORT = $MFS_PORT
MATOCS_LISTEN_HOST = $MFS_IP
MATOCS_LISTEN_PORT = $((MFS_PORT + 1))
MATOCL_LISTEN_HOST = $MFS_IP
MATOCL_LISTEN_PORT = $cl
REPLICATIONS_DELAY_INIT = 0
EOF
  echo "$MFS_IP / rw,alldirs,admin,maproot=0:0" >"$m/mfsexports.cfg"
  : >"$m/mfstopology.cfg"
  cp /var/lib/mfs/metadata.mfs.empty "$m/metadata.mfs"
  nsenter --net="/run/netns/$netns" mfsmaster -f -c "$m/mfsmaster.cfg" start >"$m/master.log" 2>&1 &
  mfs_master_pid=$!
  wait_listen "$MFS_IP:$cl" 30 || die "mfsmaster not listening; see $m/master.log: $(tail -3 "$m/master.log")"
  for i in 1 2 3; do
    d="$MDIR/cs$i"
    mkdir -p "$d/hdd"
    cat >"$d/mfschunkserver.cfg" <<EOF
WORKING_USER = root
WORKING_GROUP = root
NICE_LEVEL = 0
DATA_PATH = $d
HDD_CONF_FILENAME = $d/mfshdd.cfg
HDD_FSYNC_BEFORE_CLOSE = $MFS_FSYNC
MASTER_HOST = $MFS_IP
MASTER_PORT = $((MFS_PORT + 1))
BIND_HOST = $MFS_IP
CSSERV_LISTEN_HOST = $MFS_IP
CSSERV_LISTEN_PORT = $((MFS_PORT + 2 + i))
EOF
    echo "$d/hdd${MFS_HDD_SIZE:+ $MFS_HDD_SIZE}" >"$d/mfshdd.cfg"
    nsenter --net="/run/netns/$netns" mfschunkserver -f -c "$d/mfschunkserver.cfg" start >"$d/chunkserver.log" 2>&1 &
    mfs_cs_pids+=($!)
  done
  local n=0
  for ((i = 0; i < 120; i++)); do
    # Registered, and done scanning their disk (total space known).
    n=$(in_ns mfscli -H "$MFS_IP" -P "$cl" -SCS -s '|' 2>/dev/null | awk -F'|' -v ip="$MFS_IP" '$2 == ip && $11 > 0' | wc -l)
    [ "$n" -ge 3 ] && break
    sleep 0.5
  done
  [ "$n" -ge 3 ] || die "only $n of 3 chunkservers registered with space; logs in $MDIR/cs*/chunkserver.log"
  # Debian's mfsmount default nice is -19 too; default cache mode (AUTO), and
  # fsync before close (mfsfsyncmintime=0) as shipped.
  nsenter --net="/run/netns/$netns" mfsmount -f "$MMNT" -H "$MFS_IP" -P "$cl" -B "$MFS_IP" -o mfsnice=0 >"$MDIR/mount.log" 2>&1 &
  mfs_mount_pid=$!
  for ((i = 0; i < 120; i++)); do mountpoint -q "$MMNT" && break; sleep 0.25; done
  mountpoint -q "$MMNT" || die "mfsmount did not mount; see $MDIR/mount.log: $(tail -3 "$MDIR/mount.log")"
  in_ns mfssetgoal -r 2 "$MMNT" >/dev/null
  in_ns mfssettrashtime -r 0 "$MMNT" >/dev/null # deleted files free their space at once
  {
    echo "mfsmaster -v: $(mfsmaster -v 2>&1 | head -1)"
    echo "goal: $(in_ns mfsgetgoal "$MMNT" 2>&1)"
    echo "trashtime: $(in_ns mfsgettrashtime "$MMNT" 2>&1)"
    echo "network: namespace $netns, $(ip -n "$netns" -o addr show dev lo | awk '{print $4}' | paste -sd' ')"
    echo "chunkservers:"
    in_ns mfscli -H "$MFS_IP" -P "$cl" -SCS 2>&1
  } >"$LOGS/moosefs-up.txt"
  say "MooseFS mounted at $MMNT, goal 2"
}

# -------------------------------------------------------------- workloads
# Each workload writes its raw output to $raw and sets fig (the figure);
# failures return non-zero with the reason at the end of $raw.
cat >"$W/meta.py" <<'EOF'
# Small-file and directory phases, timed here (not per process start).
import hashlib, os, sys, time
kind, phase, root, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
size, per_dir = int(sys.argv[5]), int(sys.argv[6])
ndirs = (n + per_dir - 1) // per_dir
def fpath(i): return os.path.join(root, "d%03d" % (i // per_dir), "f%06d" % i)
def dpath(i): return os.path.join(root, "dir%06d" % i)
def content(i):  # the same in every phase (process), different in every file
    h = hashlib.sha256(b"%d" % i).digest()
    return (h * (size // len(h) + 1))[:size]
if kind == "files" and phase == "create":
    for d in range(ndirs): os.mkdir(os.path.join(root, "d%03d" % d))
t = time.monotonic()
if kind == "files":
    if phase == "create":
        for i in range(n):
            fd = os.open(fpath(i), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            if os.write(fd, content(i)) != size: sys.exit("short write " + fpath(i))
            os.close(fd)
    elif phase == "stat":
        for i in range(n):
            if os.stat(fpath(i)).st_size != size: sys.exit("wrong size " + fpath(i))
    elif phase == "read":
        for i in range(n):
            with open(fpath(i), "rb", buffering=0) as f:
                got = f.readall()
            data = content(i)
            if got != data:
                sys.exit("wrong content %s: %d bytes read, %d written, first difference at %d" % (
                    fpath(i), len(got), size, next((k for k in range(min(len(got), size)) if got[k] != data[k]), min(len(got), size))))
    elif phase == "delete":
        for i in range(n): os.unlink(fpath(i))
else:
    if phase == "mkdir":
        for i in range(n): os.mkdir(dpath(i))
    elif phase == "list":
        seen = 0
        with os.scandir(root) as it:
            for e in it:
                os.stat(e.path); seen += 1
        if seen != n: sys.exit("listed %d of %d directories" % (seen, n))
    elif phase == "rmdir":
        for i in range(n): os.rmdir(dpath(i))
el = time.monotonic() - t
if kind == "files" and phase == "delete":
    for d in range(ndirs): os.rmdir(os.path.join(root, "d%03d" % d))
print("%s %s: %d in %.3f s = %.1f/s" % (kind, phase, n, el, n / el))
EOF

# The figures of a fio JSON report that matter here, not its 260 lines.
fio_summary() {
  jq '.jobs[] | { jobname, error, job_runtime } + (
    { read, write } | map_values({ io_bytes, bw_bytes, iops, runtime,
      clat_mean_us: ((.clat_ns.mean // 0) / 1000 | round),
      clat_p50_us: ((.clat_ns.percentile["50.000000"] // 0) / 1000 | round),
      clat_p99_us: ((.clat_ns.percentile["99.000000"] // 0) / 1000 | round) }))' "$1"
}
fio_common() { echo --name="$1" --filename="$2" --bs="$3" --size="$SIZE" --ioengine=psync --direct=0 --fallocate=none --output-format=json; }

wl_seqwrite() {
  local f="$1/fio.dat" j
  # shellcheck disable=SC2046
  limit fio $(fio_common seqwrite "$f" 1M) --rw=write --end_fsync=1 >"$raw.json" 2>>"$raw" || return 1
  fio_summary "$raw.json" >>"$raw"
  # Not timed: the copies the file got.
  case "$1" in
    "$NMNT"/*)
      for ds in "$NDEV"/data[0-9]*/; do
        [ -d "$ds/blocks" ] || continue
        echo "$(basename "$ds"): $(find "$ds/blocks" -name '*.blk' | wc -l) blocks, $(du -sm "$ds/blocks" | cut -f1) MiB"
      done >>"$raw" 2>&1 ;;
    "$MMNT"/*) in_ns mfscheckfile "$f" >>"$raw" 2>&1 || true ;;
  esac
  j=$(jq -r '.jobs[0].write | "\(.bw_bytes) \(.io_bytes)"' "$raw.json") || return 1
  [ "${j#* }" -ge "$size_bytes" ] || { echo "wrote ${j#* } of $size_bytes bytes" >>"$raw"; return 1; }
  fig=$(awk -v b="${j% *}" 'BEGIN { printf "%.1f", b / 1048576 }')
}
wl_seqread() {
  local f="$1/fio.dat" j
  [ -f "$f" ] || { echo "no fio.dat (the write failed)" >>"$raw"; return 1; }
  drop_caches "$1"
  # shellcheck disable=SC2046
  limit fio $(fio_common seqread "$f" 1M) --rw=read >"$raw.json" 2>>"$raw" || return 1
  fio_summary "$raw.json" >>"$raw"
  j=$(jq -r '.jobs[0].read | "\(.bw_bytes) \(.io_bytes)"' "$raw.json") || return 1
  [ "${j#* }" -ge "$size_bytes" ] || { echo "read ${j#* } of $size_bytes bytes" >>"$raw"; return 1; }
  fig=$(awk -v b="${j% *}" 'BEGIN { printf "%.1f", b / 1048576 }')
}
wl_randread() {
  local f="$1/fio.dat"
  [ -f "$f" ] || { echo "no fio.dat (the write failed)" >>"$raw"; return 1; }
  drop_caches "$1"
  # shellcheck disable=SC2046
  limit fio $(fio_common randread "$f" 4k) --rw=randread --numjobs="$RAND_JOBS" --group_reporting \
    --time_based --runtime="$RAND_SECONDS" >"$raw.json" 2>>"$raw" || return 1
  fio_summary "$raw.json" >>"$raw"
  fig=$(jq -r '.jobs[0].read.iops | . * 10 | round / 10' "$raw.json") || return 1
  [ "$(jq -r '.jobs[0].error' "$raw.json")" = 0 ] || return 1
  rm -f "$f" # not timed
}
meta_phase() { # kind phase dir n
  local line
  line=$(limit "$PY" "$W/meta.py" "$1" "$2" "$3" "$4" "$FILE_SIZE" "$FILES_PER_DIR" 2>>"$raw") || return 1
  echo "$line" >>"$raw"
  fig=$(awk '{ v = $NF; sub("/s", "", v); print v }' <<<"$line")
}
wl_create() { mkdir -p "$1/files" && meta_phase files create "$1/files" "$FILES"; }
wl_stat() { drop_caches "$1" && meta_phase files stat "$1/files" "$FILES"; }
wl_read() { drop_caches "$1" && meta_phase files read "$1/files" "$FILES"; }
wl_delete() { drop_caches "$1" && meta_phase files delete "$1/files" "$FILES" && rmdir "$1/files"; }
wl_mkdir() { mkdir -p "$1/dirs" && meta_phase dirs mkdir "$1/dirs" "$DIRS"; }
wl_listdirs() { drop_caches "$1" && meta_phase dirs list "$1/dirs" "$DIRS"; }
wl_rmdir() { drop_caches "$1" && meta_phase dirs rmdir "$1/dirs" "$DIRS" && rmdir "$1/dirs"; }
wl_untar() {
  local t0 t1
  mkdir -p "$1/tar" || return 1
  drop_caches "$1"
  t0=$(date +%s.%N)
  limit tar -xf "$W/src.tar" -C "$1/tar" >>"$raw" 2>&1 || return 1
  t1=$(date +%s.%N)
  fig=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
  echo "extracted in $fig s; comparing with the archive (not timed)..." >>"$raw"
  # tar --compare reads every file back: a check that the bytes arrived.
  limit tar --compare -f "$W/src.tar" -C "$1/tar" >>"$raw" 2>&1 || { echo "tar --compare found differences" >>"$raw"; return 1; }
  echo "tar --compare: identical" >>"$raw"
  limit rm -rf "$1/tar" >>"$raw" 2>&1 || true
}
wl_dbench() {
  mkdir -p "$1/dbench" || return 1
  limit dbench -D "$1/dbench" -t "$DBENCH_SECONDS" -c "$dbench_load" "$DBENCH_CLIENTS" >"$raw.txt" 2>&1
  local rc=$?
  # Its progress lines end in \r: keep the summary readable.
  tr '\r' '\n' <"$raw.txt" | grep -v '^ *[0-9]* *[0-9]* *[0-9.]* MB/sec' >>"$raw"
  [ "$rc" = 0 ] || return 1
  fig=$(grep -o 'Throughput [0-9.]* MB/sec' "$raw.txt" | awk '{ printf "%.2f", $2 }')
  [ -n "$fig" ] || return 1
  limit rm -rf "$1/dbench" >>"$raw" 2>&1 || true
}

declare -A RES=() TRIPS=()

# The Nimbus mount's counters (nimbus mount --metrics, which dev up turns
# on): "kind value" lines of what it asked of the cluster so far.
nimbus_counters() {
  local url
  url=$("$BIN/nimbus" dev status --dev-dir "$NDEV" --json 2>/dev/null | jq -r '.mount.metrics // empty') || return 0
  [ -n "$url" ] || return 0
  "$PY" - "$url" <<'PYEOF' 2>/dev/null || true
import re, sys, urllib.request
text = urllib.request.urlopen(sys.argv[1], timeout=5).read().decode()
for m in re.finditer(r'^nimbus_mount_cluster_total\{kind="(\w+)"\} (\S+)$', text, re.M):
    print(m.group(1), int(float(m.group(2))))
PYEOF
}
# How many items a workload handles, to show round trips per item.
items_of() {
  case "$1" in
    create | stat | read | delete) echo "$FILES file" ;;
    mkdir | listdirs | rmdir) echo "$DIRS dir" ;;
    untar) echo "$(tar -tf "$W/src.tar" | wc -l) entry" ;;
    seqwrite | seqread) echo "$((size_bytes >> 20)) MiB" ;;
    *) echo "1 run" ;;
  esac
}
# Round trips per item between two counter snapshots: namespace commits,
# namespace reads, block uploads, block downloads.
trips() { # before after items
  "$PY" - "$1" "$2" "$3" <<'PYEOF'
import sys
def load(t): return {k: int(v) for k, v in (l.split() for l in t.splitlines() if l.strip())}
b, a = load(sys.argv[1]), load(sys.argv[2])
n = max(1, int(sys.argv[3]))
d = lambda k: (a.get(k, 0) - b.get(k, 0)) / n
print("%.2f %.2f %.2f %.2f" % (d("ns_writes"), d("ns_reads"), d("block_writes"), d("block_reads")))
PYEOF
}

run_one() { # nimbus|moosefs mountpoint workload
  local sys=$1 mnt=$2 w=$3 key label rc t0
  key=${w%%|*} label=${w#*|} label=${label%%|*}
  raw="$LOGS/$sys-$key.txt" fig=""
  if ! mount_ok "$mnt"; then
    RES[$sys.$key]="n/a"
    echo "skipped: $mnt is not mounted any more, or does not answer" >"$raw"
    say "$sys: $label: skipped ($mnt is not mounted any more, or does not answer)"
    # A hung mount: abort it, so that what is stuck in it can end.
    if is_mounted "$mnt"; then abort_fuse "$mnt"; fi
    return 0
  fi
  mkdir -p "$mnt/bench"
  say "$sys: $label..."
  echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)" >"$raw"
  printf '%-8s %-9s load %s' "$sys" "$key" "$(cut -d' ' -f1 /proc/loadavg)" >>"$LOGS/load.txt"
  t0=$SECONDS
  # Watchdog: a workload may run several commands of WORKLOAD_TIMEOUT each;
  # past twice that plus 2 minutes the mount is taken for hung.
  (
    for ((i = 0; i < 2 * WORKLOAD_TIMEOUT + 120; i++)); do sleep 1; done
    say "$sys: $label: no progress; aborting the FUSE connection of $mnt"
    echo "HUNG: FUSE connection aborted by the watchdog" >>"$raw"
    abort_fuse "$mnt"
  ) &
  watchdog=$!
  local counted="" items
  if [ "$sys" = nimbus ]; then counted=$(nimbus_counters); fi
  set +e
  "wl_$key" "$mnt/bench"
  rc=$?
  set -e
  if [ -n "$counted" ]; then
    items=$(items_of "$key")
    TRIPS[$key]="$(trips "$counted" "$(nimbus_counters)" "${items% *}") per ${items#* }"
    echo "cluster round trips per ${items#* } (commits reads uploads downloads): ${TRIPS[$key]}" >>"$raw"
  fi
  kill "$watchdog" 2>/dev/null || true
  wait "$watchdog" 2>/dev/null || true
  echo " -> $(cut -d' ' -f1 /proc/loadavg), $((SECONDS - t0)) s" >>"$LOGS/load.txt"
  if [ "$rc" = 0 ] && [ -n "$fig" ]; then
    RES[$sys.$key]=$fig
    say "$sys: $label: $fig $(cut -d'|' -f3 <<<"$w")"
  else
    RES[$sys.$key]=FAIL
    failures+=("$sys: $label (exit $rc): $(grep -v '^ *$' "$raw" | tail -2 | tr '\n' ' ' | cut -c1-300)")
    echo "FAILED (exit $rc) at $(date -u +%T)" >>"$raw"
    if [ "$sys" = nimbus ]; then
      "$BIN/nimbus" dev status --dev-dir "$NDEV" >>"$raw" 2>&1 || true
      echo "mount.log, last 20 lines:" >>"$raw"
      tail -20 "$NDEV/mount.log" >>"$raw" 2>&1 || true
    fi
    say "$sys: $label: FAILED (exit $rc); last lines:"
    tail -5 "$raw" | sed 's/^/    /' >&2
  fi
}

# --------------------------------------------------------------------- run
say "work directory $W; results will go to $out"
say "making the tarball of $TAR_SRC (on local disk, once)"
tar -cf "$W/src.tar" -C "$(dirname "$TAR_SRC")" "$(basename "$TAR_SRC")" 2>"$LOGS/tar-create.txt" ||
  say "warning: tar of $TAR_SRC: $(tail -1 "$LOGS/tar-create.txt")"
src_desc="$(tar -tf "$W/src.tar" | wc -l) entries, $(du -m "$W/src.tar" | cut -f1) MiB"
# key | label | unit | better
WORKLOADS=(
  "seqwrite|fio seq write $SIZE, 1 MiB, end_fsync|MiB/s|higher"
  "seqread|fio seq read $SIZE, 1 MiB, cold|MiB/s|higher"
  "randread|fio rand read 4 KiB, ${RAND_JOBS} jobs, ${RAND_SECONDS} s|IOPS|higher"
  "create|$FILES files of $FILE_SIZE B: create|files/s|higher"
  "stat|$FILES files: stat, cold|files/s|higher"
  "read|$FILES files: read, cold|files/s|higher"
  "delete|$FILES files: delete|files/s|higher"
  "mkdir|$DIRS dirs: mkdir|dirs/s|higher"
  "listdirs|$DIRS dirs: readdir + stat, cold|dirs/s|higher"
  "rmdir|$DIRS dirs: rmdir|dirs/s|higher"
  "untar|tar -x of $(basename "$TAR_SRC") ($src_desc)|s|lower"
  "dbench|dbench $DBENCH_CLIENTS clients, $DBENCH_SECONDS s|MB/s|higher"
)
failures=()
# Both mounts at once, each workload on one and then on the other: the two
# figures of a row are taken minutes apart, not a whole run apart, on this
# machine whose other users come and go.
if [ "$only" != moosefs ]; then start_nimbus; fi
if [ "$only" != nimbus ]; then start_moosefs; fi
for w in "${WORKLOADS[@]}"; do
  if [ "$only" != moosefs ]; then run_one nimbus "$NMNT" "$w"; fi
  if [ "$only" != nimbus ]; then run_one moosefs "$MMNT" "$w"; fi
done
if [ "$only" != moosefs ] && ! mount_ok "$NMNT"; then
  failures+=("nimbus: the mount at $NMNT was gone or hung at the end (see the mount log below)")
fi
nimbus_down
mfs_down

# ------------------------------------------------------------------- report
ratio() { # nimbus moosefs
  awk -v n="$1" -v m="$2" 'BEGIN {
    if (n ~ /^[0-9.]+$/ && m ~ /^[0-9.]+$/ && m > 0) printf "%.2f", n / m; else print "-" }'
}
table() {
  printf '%-46s %-8s %12s %12s %9s  %s\n' workload unit Nimbus MooseFS "N/M" "better"
  printf '%s\n' "$(printf '%.0s-' {1..104})"
  local w key label unit better
  for w in "${WORKLOADS[@]}"; do
    IFS='|' read -r key label unit better <<<"$w"
    printf '%-46s %-8s %12s %12s %9s  %s\n' "$label" "$unit" "${RES[nimbus.$key]:--}" \
      "${RES[moosefs.$key]:--}" "$(ratio "${RES[nimbus.$key]:--}" "${RES[moosefs.$key]:--}")" \
      "$better is better"
  done
}
machine() {
  echo "date:    $(date -u)"
  echo "machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -h | awk '/^Mem:/ { print $2 }') memory, kernel $(uname -r)"
  echo "os:      $(grep -m1 '^PRETTY_NAME=' /etc/os-release | cut -d= -f2 | tr -d '"')"
  echo "disk:    $(df -hT "$WORK_DIR" | awk 'NR == 2 { print $1 ", " $2 ", " $3 " total, " $5 " free" }') (both clusters' data under $WORK_DIR)"
  echo "nimbus:  $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo ' (working tree differs from HEAD)'), release build; R=2 (the cluster default, DEFAULT_REPLICATION; no command sets it per directory yet); mount defaults (4 threads, attribute TTL 1 s$([ -n "${NIMBUS_CREATE_AT_OPEN:-}" ] && echo ', NIMBUS_CREATE_AT_OPEN: files created at open')$([ -n "${NIMBUS_NO_FOLDER_LISTINGS:-}" ] && echo ', NIMBUS_NO_FOLDER_LISTINGS: every lookup asks the cluster'))"
  echo "moosefs: $(dpkg-query -W -f '${Version}' moosefs-master 2>/dev/null) (Debian), goal 2, trash time 0, HDD_FSYNC_BEFORE_CLOSE=$MFS_FSYNC, mfsmount defaults (cache mode AUTO), on $MFS_IP in a network namespace of its own"
  echo "tools:   $(fio --version), dbench $(dbench --help 2>&1 | head -1 | awk '{ print $3 }'), python $($PY -c 'import platform; print(platform.python_version())')"
  echo "sizes:   SIZE=$SIZE FILES=$FILES FILE_SIZE=$FILE_SIZE FILES_PER_DIR=$FILES_PER_DIR DIRS=$DIRS RAND_JOBS=$RAND_JOBS RAND_SECONDS=$RAND_SECONDS DBENCH_CLIENTS=$DBENCH_CLIENTS DBENCH_SECONDS=$DBENCH_SECONDS$quick_note"
}

{
  echo "# Nimbus vs MooseFS on one machine (bench/compare-moosefs.sh)"
  machine
  echo
  table
  echo
  echo "Ratios are Nimbus/MooseFS: above 1 is better for Nimbus where higher is"
  echo "better, below 1 where lower is better. Both clusters ran at once on this"
  echo "machine, servers at nice 0; each workload ran on Nimbus, then on MooseFS."
  echo "Other processes share the cores: the load average at the start and end of"
  echo "each workload, and its duration:"
  sed 's/^/  /' "$LOGS/load.txt" 2>/dev/null || true
  if [ ${#TRIPS[@]} -gt 0 ]; then
    echo
    echo "What each Nimbus workload asked of its cluster, per item (from the"
    echo "mount's counters): namespace commits, namespace reads, block uploads,"
    echo "block downloads:"
    for w in "${WORKLOADS[@]}"; do
      key=${w%%|*}
      [ -n "${TRIPS[$key]:-}" ] && printf '  %-10s %s\n' "$key" "${TRIPS[$key]}"
    done
  fi
  if [ ${#failures[@]} -gt 0 ]; then
    echo
    echo "## Failures"
    printf -- '- %s\n' "${failures[@]}"
  fi
} >"$W/summary.txt"

{
  cat "$W/summary.txt"
  echo
  echo "## Setup"
  for f in nimbus-up moosefs-up; do
    [ -f "$LOGS/$f.txt" ] && { echo "### $f"; cat "$LOGS/$f.txt"; }
  done
  echo
  echo "## Raw outputs"
  for sys in nimbus moosefs; do
    for w in "${WORKLOADS[@]}"; do
      key=${w%%|*}
      [ -f "$LOGS/$sys-$key.txt" ] || continue
      echo "### $sys $key"
      cat "$LOGS/$sys-$key.txt"
    done
  done
  if [ -f "$LOGS/nimbus-dev/mount.log" ]; then
    echo
    n=$(grep -ciE 'error|warn|panic' "$LOGS/nimbus-dev/mount.log" || true)
    echo "## Nimbus mount.log: $(wc -l <"$LOGS/nimbus-dev/mount.log") lines, $n with error/warn/panic"
    if [ "$n" -gt 0 ]; then
      echo "The last of those:"
      grep -iE 'error|warn|panic' "$LOGS/nimbus-dev/mount.log" | tail -20
    fi
  fi
  if [ ${#failures[@]} -gt 0 ] && [ -d "$LOGS/nimbus-dev" ]; then
    echo
    echo "## Nimbus logs (last 60 lines of each, from the dev dir)"
    for f in "$LOGS"/nimbus-dev/mount.log "$LOGS"/nimbus-dev/[!m]*.log "$LOGS"/nimbus-dev/meta*.log; do
      [ -f "$f" ] || continue
      echo "### $(basename "$f")"
      tail -60 "$f"
    done
  fi
} >"$out"

echo >&2
cat "$W/summary.txt"
say "saved to $out"
