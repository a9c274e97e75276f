#!/usr/bin/env bash
# Test machines for the Ansible scenario: Debian 12 containers booted by
# systemd-nspawn with systemd as PID 1 and sshd, each with its own address on
# a bridge inside a network namespace this script creates (and removes).
#
#   machines.sh rootfs                 build the cached root file system
#   machines.sh up STATE NAME IP...    boot machines (NAME=IP pairs)
#   machines.sh down STATE             stop every machine, remove the network
#
# STATE is a directory of the test (machine copies, pids, ssh key). Nothing
# here talks to the network outside the namespace, except the Debian mirror
# when the root file system is first built. The namespace name and the
# 10.77.0.0/24 addresses are fixed: one run at a time per host (set
# NIMBUS_ANSIBLE_NETNS to give a second run its own namespaces; the
# addresses may then repeat, as they are private to each namespace).
set -euo pipefail

CACHE="${NIMBUS_ANSIBLE_CACHE:-/var/cache/nimbus-ansible-test}"
ROOTFS="$CACHE/bookworm-rootfs"
# Bump when the package list changes, so old caches are rebuilt.
ROOTFS_VERSION=1
NETNS="${NIMBUS_ANSIBLE_NETNS:-nimbus-at}"
BRIDGE=nbr0
GATEWAY=10.77.0.1

die() { echo "machines.sh: $*" >&2; exit 1; }
has_netns() { ip netns list | awk '{ print $1 }' | grep -qx -- "$1"; }

build_rootfs() {
  if [ -f "$ROOTFS/.nimbus-rootfs-$ROOTFS_VERSION" ]; then
    return 0
  fi
  command -v mmdebstrap >/dev/null || die "mmdebstrap is not installed (apt-get install mmdebstrap)"
  mkdir -p "$CACHE"
  rm -rf "$ROOTFS.tmp"
  # systemd-sysv: systemd as /sbin/init; dbus so systemctl works inside;
  # openssh-server and python3 are what Ansible needs of a server.
  mmdebstrap --variant=minbase \
    --include=systemd,systemd-sysv,dbus,openssh-server,python3,iproute2,sudo,procps,ca-certificates \
    bookworm "$ROOTFS.tmp" http://deb.debian.org/debian
  # networkd brings lo up; host0 gets its address from machines.sh up.
  chroot "$ROOTFS.tmp" systemctl enable systemd-networkd ssh >/dev/null
  # Units that fail or hang in a container without hardware.
  chroot "$ROOTFS.tmp" systemctl mask systemd-networkd-wait-online.service \
    getty@tty1.service console-getty.service systemd-resolved.service >/dev/null 2>&1 || true
  sed -i 's/^#\?PermitRootLogin.*/PermitRootLogin prohibit-password/' "$ROOTFS.tmp/etc/ssh/sshd_config"
  # Host keys are made per machine at boot (ssh.service's ExecStartPre does not,
  # so a one-shot unit does it).
  rm -f "$ROOTFS.tmp"/etc/ssh/ssh_host_*
  cat > "$ROOTFS.tmp/etc/systemd/system/ssh-hostkeys.service" <<'EOF'
[Unit]
Description=Make this machine's SSH host keys
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key
[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
[Install]
WantedBy=multi-user.target
EOF
  chroot "$ROOTFS.tmp" systemctl enable ssh-hostkeys.service >/dev/null
  touch "$ROOTFS.tmp/.nimbus-rootfs-$ROOTFS_VERSION"
  rm -rf "$ROOTFS"
  mv "$ROOTFS.tmp" "$ROOTFS"
}

net_up() {
  has_netns "$NETNS" && return 0
  ip netns add "$NETNS"
  ip -n "$NETNS" link set lo up
  ip -n "$NETNS" link add "$BRIDGE" type bridge
  ip -n "$NETNS" addr add "$GATEWAY/24" dev "$BRIDGE"
  ip -n "$NETNS" link set "$BRIDGE" up
}

# up STATE NAME=IP...
machines_up() {
  local state=$1; shift
  build_rootfs
  mkdir -p "$state/machines"
  [ -f "$state/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$state/id_ed25519"
  net_up
  local spec name ip root
  for spec in "$@"; do
    name=${spec%%=*}; ip=${spec#*=}
    root="$state/machines/$name"
    if [ -f "$state/machines/$name.pid" ] && kill -0 "$(cat "$state/machines/$name.pid")" 2>/dev/null; then
      continue
    fi
    rm -rf "$root"
    cp -a --reflink=auto "$ROOTFS" "$root"
    echo "$name" > "$root/etc/hostname"
    printf '127.0.0.1 localhost\n127.0.1.1 %s\n' "$name" > "$root/etc/hosts"
    rm -f "$root/etc/machine-id"; : > "$root/etc/machine-id"
    mkdir -p "$root/root/.ssh" && chmod 700 "$root/root/.ssh"
    cp "$state/id_ed25519.pub" "$root/root/.ssh/authorized_keys"
    # Each machine gets its own network namespace with one end of a veth
    # pair (host0, its address); the other end joins the test's bridge.
    # (nspawn is not run under `ip netns exec`: that remounts /sys and hides
    # the cgroup mounts systemd needs inside.)
    local mns="$NETNS-$name" peer="v-$name"
    has_netns "$mns" && ip netns delete "$mns"
    ip -n "$NETNS" link delete "$peer" 2>/dev/null || true
    ip netns add "$mns"
    ip -n "$NETNS" link add "$peer" type veth peer name host0 netns "$mns"
    ip -n "$NETNS" link set "$peer" master "$BRIDGE" up
    ip -n "$mns" link set lo up
    ip -n "$mns" addr add "$ip/24" dev host0
    ip -n "$mns" link set host0 up
    ip -n "$mns" route add default via "$GATEWAY"
    systemd-nspawn --quiet --register=no --keep-unit \
      --boot --directory="$root" --machine="$name" \
      --network-namespace-path="/run/netns/$mns" \
      --console=read-only \
      >"$state/machines/$name.log" 2>&1 </dev/null &
    echo $! > "$state/machines/$name.pid"
  done
  # Ready when sshd answers on each address.
  for spec in "$@"; do
    name=${spec%%=*}; ip=${spec#*=}
    local tries=0
    until state_is=$(ip netns exec "$NETNS" ssh -i "$state/id_ed25519" -o BatchMode=yes \
        -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=2 \
        -o LogLevel=ERROR "root@$ip" systemctl is-system-running --wait 2>/dev/null);
        [ "$state_is" = running ] || [ "$state_is" = degraded ]; do
      tries=$((tries + 1))
      if ! kill -0 "$(cat "$state/machines/$name.pid")" 2>/dev/null; then
        tail -30 "$state/machines/$name.log" >&2
        die "machine $name ($ip) stopped while booting; log: $state/machines/$name.log"
      fi
      [ $tries -lt 120 ] || { tail -30 "$state/machines/$name.log" >&2; die "machine $name ($ip) did not answer over SSH"; }
      sleep 1
    done
  done
}

machines_down() {
  local state=$1 pidfile pid name
  # nspawn turns SIGTERM into a clean poweroff request to the container's
  # systemd; all machines shut down at once, then each is waited for.
  for pidfile in "$state"/machines/*.pid; do
    [ -f "$pidfile" ] || continue
    kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
  done
  for pidfile in "$state"/machines/*.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    name=$(basename "$pidfile" .pid)
    for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; sleep 1; fi
    rm -f "$pidfile"
    rm -rf "${state:?}/machines/$name"
  done
  local ns
  for ns in $(ip netns list | awk '{ print $1 }'); do
    case "$ns" in
      "$NETNS"|"$NETNS"-*) ip netns delete "$ns" ;;
    esac
  done
}

cmd=${1:-}; shift || true
case "$cmd" in
  rootfs) build_rootfs ;;
  up) [ $# -ge 2 ] || die "usage: up STATE NAME=IP..."; machines_up "$@" ;;
  down) [ $# -eq 1 ] || die "usage: down STATE"; machines_down "$1" ;;
  *) die "usage: machines.sh rootfs | up STATE NAME=IP... | down STATE" ;;
esac
