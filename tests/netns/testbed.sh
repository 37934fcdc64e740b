#!/usr/bin/env bash
# dndm's multi-host testbed: N "hosts" on one machine, each a network namespace with one
# interface, all cabled to a bridge that lives in a namespace of its own (the "switch"). Nothing
# is added to the root namespace. Needs root (and `ip` from iproute2: see setup.sh).
#
# Usage:
#   testbed.sh up N              switch + hosts h1..hN (1 <= N <= 50), host hI is 10.78.0.I/24
#   testbed.sh down              kill what still runs in the namespaces, delete them all
#   testbed.sh exec hI CMD...    run CMD inside host hI (as `ip netns exec`)
#   testbed.sh link hI up|down   plug / pull hI's cable (its port on the switch)
#   testbed.sh list              the namespaces of this testbed
#
# Namespaces are "<prefix>sw" (the switch, bridge br0, ports p1..pN) and "<prefix>h1".."<prefix>hN"
# (interface eth0, lo up, a route for multicast 224.0.0.0/4 on eth0). The prefix comes from
# DNDM_NETNS_PREFIX (default "dndm"); give every concurrent testbed its own, e.g.
# DNDM_NETNS_PREFIX=dndm$$. No state is kept outside the namespaces: `down` finds them by name.
set -euo pipefail
# The ERR trap in `up` (take a half-built testbed down) must fire inside functions too.
set -o errtrace

PREFIX=${DNDM_NETNS_PREFIX:-dndm}
[[ $PREFIX =~ ^[A-Za-z0-9_-]{1,20}$ ]] || { echo "testbed.sh: DNDM_NETNS_PREFIX must be 1-20 letters, digits, - or _" >&2; exit 1; }
SWITCH="${PREFIX}sw"
BRIDGE=br0
SUBNET=10.78.0

fail() {
  echo "testbed.sh: $*" >&2
  exit 1
}

require_root() {
  [ "$(id -u)" -eq 0 ] || fail "needs root (network namespaces)"
  command -v ip >/dev/null || fail "'ip' not found: run tests/netns/setup.sh (installs iproute2)"
}

# The namespaces of this testbed that exist now, hosts first, the switch last.
namespaces() {
  local all
  all=$(ip netns list | cut -d' ' -f1)
  grep -E "^${PREFIX}h[0-9]+\$" <<<"$all" | sort -V || true
  grep -Fx "$SWITCH" <<<"$all" || true
}

# The host number of "hI" (also accepts the full namespace name "<prefix>hI").
host_number() {
  local name=${1#"$PREFIX"}
  [[ $name =~ ^h([0-9]+)$ ]] || fail "not a host name: $1 (expected h1, h2, ...)"
  echo "${BASH_REMATCH[1]}"
}

# The namespace of an existing host.
host_ns() {
  local ns="${PREFIX}h$(host_number "$1")"
  ip netns list | cut -d' ' -f1 | grep -Fxq "$ns" || fail "no host $1 (namespace $ns) in testbed '$PREFIX'"
  echo "$ns"
}

up() {
  local count=${1:-}
  [[ $count =~ ^[0-9]+$ ]] && [ "$count" -ge 1 ] && [ "$count" -le 50 ] || fail "usage: testbed.sh up N (1..50)"
  require_root
  [ -z "$(namespaces)" ] || fail "testbed '$PREFIX' exists already; run 'testbed.sh down' first"
  # Half-built testbeds are taken down again.
  trap 'echo "testbed.sh: up failed (line $LINENO); taking the testbed down" >&2; down >/dev/null 2>&1' ERR

  ip netns add "$SWITCH"
  ip -n "$SWITCH" link set lo up
  # No STP and no forwarding delay: ports forward as soon as they are up. Multicast snooping off,
  # so mDNS reaches every port without IGMP joins being tracked.
  ip -n "$SWITCH" link add name "$BRIDGE" type bridge stp_state 0 forward_delay 0 mcast_snooping 0
  ip -n "$SWITCH" link set "$BRIDGE" up

  local i host port
  for i in $(seq 1 "$count"); do
    host="${PREFIX}h$i"
    port="p$i"
    ip netns add "$host"
    # The veth pair is created in the switch and its host end moved into the host namespace.
    ip -n "$SWITCH" link add name "$port" type veth peer name eth0 netns "$host"
    ip -n "$SWITCH" link set "$port" master "$BRIDGE" up
    ip -n "$host" link set lo up
    ip -n "$host" link set eth0 address "02:78:00:00:00:$(printf '%02x' "$i")"
    ip -n "$host" addr add "$SUBNET.$i/24" dev eth0
    ip -n "$host" link set eth0 up
    # Multicast (mDNS on 224.0.0.251) leaves through eth0 even for sockets that pick no interface.
    ip -n "$host" route add 224.0.0.0/4 dev eth0
  done
  trap - ERR
  echo "testbed '$PREFIX' up: switch $SWITCH, hosts h1..h$count on $SUBNET.0/24"
}

down() {
  require_root
  local ns pids
  for ns in $(namespaces); do
    # Whatever still runs in a namespace keeps it alive: end it by pid, politely first.
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    if [ -n "$pids" ]; then
      echo "stopping processes in $ns: $(echo $pids)"
      kill -TERM $pids 2>/dev/null || true
      for _ in 1 2 3 4 5 6 7 8 9 10; do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        [ -z "$pids" ] && break
        sleep 0.1
      done
      [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
    fi
  done
  # Deleting a namespace deletes its veth ends (and, for the switch, the bridge).
  for ns in $(namespaces); do
    ip netns del "$ns" && echo "deleted $ns"
  done
  echo "testbed '$PREFIX' down"
}

run_in() {
  [ $# -ge 2 ] || fail "usage: testbed.sh exec hI CMD..."
  local ns
  ns=$(host_ns "$1")
  shift
  exec ip netns exec "$ns" "$@"
}

link() {
  [ $# -eq 2 ] && { [ "$2" = up ] || [ "$2" = down ]; } || fail "usage: testbed.sh link hI up|down"
  local ns
  ns=$(host_ns "$1")
  ip -n "$SWITCH" link set "p$(host_number "$ns")" "$2"
}

command=${1:-help}
shift || true
case "$command" in
  up) up "$@" ;;
  down) down ;;
  exec) run_in "$@" ;;
  link) link "$@" ;;
  list) namespaces ;;
  help | -h | --help) sed -n '2,17s/^# \{0,1\}//p' "$0" ;;
  *)
    sed -n '2,17s/^# \{0,1\}//p' "$0" >&2
    exit 64
    ;;
esac
