#!/usr/bin/env bash
# A client of the scenario, run inside the test's network namespace: mounts
# the cluster with `nimbus mount` at $MNT, does one job, unmounts.
#
#   client.sh copy SRC OUT        copy SRC in (to /tree), then back out to OUT
#   client.sh load STOP RESULT LOG
#                                 until file STOP exists: write a file, read
#                                 it and an older one back and compare; every
#                                 failed operation is counted, never retried
#   client.sh verify SRC          /tree equals SRC, every load file matches
#                                 its recorded checksum
#
# Environment: BIN, CERTS, META, MNT, NIMBUS_CONFIG_DIR (a signed-in profile).
set -uo pipefail
: "${BIN:?}" "${CERTS:?}" "${META:?}" "${MNT:?}"

MOUNT_PID=
mount_cluster() {
  mkdir -p "$MNT"
  "$BIN/nimbus" --meta "$META" --tls-dir "$CERTS" mount "$MNT" > "$MNT.mount.log" 2>&1 &
  MOUNT_PID=$!
  for _ in $(seq 1 300); do
    mountpoint -q "$MNT" && return 0
    kill -0 "$MOUNT_PID" 2>/dev/null || { cat "$MNT.mount.log" >&2; echo "client: mount failed" >&2; exit 1; }
    sleep 0.2
  done
  echo "client: $MNT never became a mount point" >&2
  exit 1
}
unmount_cluster() {
  fusermount3 -u "$MNT" 2>/dev/null || umount "$MNT" 2>/dev/null
  [ -n "$MOUNT_PID" ] && wait "$MOUNT_PID" 2>/dev/null
  MOUNT_PID=
}
trap unmount_cluster EXIT
trap 'exit 143' TERM INT

job=${1:-}; shift || true
mount_cluster
case "$job" in
  copy)
    set -e
    rm -rf "$MNT/tree" "$2"
    cp -a "$1" "$MNT/tree"
    cp -a "$MNT/tree" "$2"
    ;;
  load)
    stop=$1 result=$2 log=$3
    mkdir -p "$MNT/load"
    sums="$(dirname "$result")/load.sha256"
    : > "$sums"
    ops=0 failures=0 i=0
    scratch=$(mktemp -d)
    while [ ! -e "$stop" ]; do
      i=$((i + 1))
      head -c $(( (i % 7 + 1) * 150000 )) /dev/urandom > "$scratch/f"
      want=$(sha256sum < "$scratch/f" | cut -d' ' -f1)
      if cp "$scratch/f" "$MNT/load/f$i" && sync "$MNT/load/f$i"; then
        echo "$want  load/f$i" >> "$sums"
      else
        failures=$((failures + 1)); echo "write f$i failed" >> "$log"
      fi
      ops=$((ops + 1))
      # Read back this file and one written earlier (its blocks may have
      # moved since: rebalance, drain).
      for j in $i $(( RANDOM % i + 1 )); do
        want=$(grep "  load/f$j\$" "$sums" | cut -d' ' -f1)
        [ -n "$want" ] || continue
        got=$(sha256sum < "$MNT/load/f$j" 2>>"$log" | cut -d' ' -f1)
        ops=$((ops + 1))
        if [ "$got" != "$want" ]; then
          failures=$((failures + 1)); echo "read f$j: wrong or failed ($got)" >> "$log"
        fi
      done
      echo "round $i: $ops operations, $failures failures" >> "$log"
    done
    rm -rf "$scratch"
    printf 'ops %s\nfailures %s\n' "$ops" "$failures" > "$result"
    ;;
  verify)
    set -e
    diff -r "$1" "$MNT/tree"
    sums="$(dirname "$1")/load.sha256"
    (cd "$MNT" && sha256sum --quiet -c "$sums")
    echo "tree and $(wc -l < "$sums") load files read back intact"
    ;;
  *) echo "client.sh: unknown job $job" >&2; exit 2 ;;
esac
