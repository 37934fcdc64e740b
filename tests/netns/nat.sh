#!/usr/bin/env bash
# dndm's NAT testbed: two private networks, each behind its own NAT, and a public network
# with a relay. Every box is a network namespace; nothing is added to the root namespace.
# Needs root, `ip` and `nft` (see setup.sh nat).
#
# Usage:
#   nat.sh up [cone|symmetric]   build it; `cone` (default) NATs keep a host's source port, so
#                                hole punching works; `symmetric` NATs pick a random port per
#                                connection, so it cannot (and they reset unsolicited TCP, so
#                                hole-punch dials fail fast)
#   nat.sh down                  kill what still runs in the namespaces, delete them all
#   nat.sh exec HOST CMD...      run CMD in HOST: relay, a, b, c, nata, natb, wan
#   nat.sh block                 each NAT refuses (TCP RST) connections to the other NAT's
#                                public address: hole punching fails fast, relays still work
#   nat.sh unblock               undo `block`
#   nat.sh list                  the namespaces of this testbed
#
#   public 203.0.113.0/24 (bridge in <prefix>wan):
#     relay 203.0.113.10   c 203.0.113.20   nata 203.0.113.1   natb 203.0.113.2
#   private A 192.168.1.0/24: nata 192.168.1.1 (gateway), a 192.168.1.2
#   private B 192.168.2.0/24: natb 192.168.2.1 (gateway), b 192.168.2.2
#
# A NAT masquerades what leaves through its public side and drops every new connection that
# arrives there (no RST), like a home router; a symmetric one resets new TCP instead. The prefix
# comes from DNDM_NETNS_PREFIX (default "dndmnat"); give every concurrent testbed its own.
set -euo pipefail
set -o errtrace

PREFIX=${DNDM_NETNS_PREFIX:-dndmnat}
[[ $PREFIX =~ ^[A-Za-z0-9_-]{1,20}$ ]] || { echo "nat.sh: DNDM_NETNS_PREFIX must be 1-20 letters, digits, - or _" >&2; exit 1; }
HOSTS=(wan relay c nata natb a b)

fail() {
  echo "nat.sh: $*" >&2
  exit 1
}

require_root() {
  [ "$(id -u)" -eq 0 ] || fail "needs root (network namespaces)"
  command -v ip >/dev/null || fail "'ip' not found: run tests/netns/setup.sh nat"
  command -v nft >/dev/null || fail "'nft' not found: run tests/netns/setup.sh nat"
}

namespaces() {
  local all h
  all=$(ip netns list | cut -d' ' -f1)
  for h in "${HOSTS[@]}"; do
    grep -Fx "${PREFIX}-$h" <<<"$all" || true
  done
}

# A host on the public bridge: veth pair, its end named $3 in the host, address $2.
plug_public() {
  local host=$1 addr=$2 dev=$3
  ip -n "${PREFIX}-wan" link add name "p-$host" type veth peer name "$dev" netns "${PREFIX}-$host"
  ip -n "${PREFIX}-wan" link set "p-$host" master br0 up
  ip -n "${PREFIX}-$host" addr add "$addr/24" dev "$dev"
  ip -n "${PREFIX}-$host" link set "$dev" up
}

# A private network: NAT box $1 with gateway address $3 on lan0, host $2 with address $4.
private_net() {
  local nat=$1 host=$2 gw=$3 addr=$4 mode=$5 flags="" refuse=""
  ip -n "${PREFIX}-$nat" link add name lan0 type veth peer name eth0 netns "${PREFIX}-$host"
  ip -n "${PREFIX}-$nat" addr add "$gw/24" dev lan0
  ip -n "${PREFIX}-$nat" link set lan0 up
  ip -n "${PREFIX}-$host" addr add "$addr/24" dev eth0
  ip -n "${PREFIX}-$host" link set eth0 up
  ip -n "${PREFIX}-$host" route add default via "$gw"
  ip netns exec "${PREFIX}-$nat" sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'
  # Symmetric: a random public port per connection, and unsolicited TCP is refused with a
  # reset (as many such NATs do) so that hole-punch dials fail fast instead of timing out.
  if [ "$mode" = symmetric ]; then
    flags="fully-random"
    refuse='iifname "wan0" ct state new meta l4proto tcp reject with tcp reset'
  fi
  ip netns exec "${PREFIX}-$nat" nft -f - <<NFT
table ip nat {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan0" masquerade $flags
  }
}
table inet filter {
  chain input {
    type filter hook input priority filter; policy accept;
    $refuse
    iifname "wan0" ct state new drop
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    $refuse
    iifname "wan0" ct state new drop
    jump block
  }
  chain block {
  }
}
NFT
}

up() {
  local mode=${1:-cone}
  [ "$mode" = cone ] || [ "$mode" = symmetric ] || fail "usage: nat.sh up [cone|symmetric]"
  require_root
  [ -z "$(namespaces)" ] || fail "testbed '$PREFIX' exists already; run 'nat.sh down' first"
  trap 'echo "nat.sh: up failed (line $LINENO); taking the testbed down" >&2; down >/dev/null 2>&1' ERR
  local h
  for h in "${HOSTS[@]}"; do
    ip netns add "${PREFIX}-$h"
    ip -n "${PREFIX}-$h" link set lo up
  done
  ip -n "${PREFIX}-wan" link add name br0 type bridge stp_state 0 forward_delay 0
  ip -n "${PREFIX}-wan" link set br0 up
  plug_public relay 203.0.113.10 eth0
  plug_public c 203.0.113.20 eth0
  plug_public nata 203.0.113.1 wan0
  plug_public natb 203.0.113.2 wan0
  private_net nata a 192.168.1.1 192.168.1.2 "$mode"
  private_net natb b 192.168.2.1 192.168.2.2 "$mode"
  trap - ERR
  echo "nat testbed '$PREFIX' up ($mode NATs): relay 203.0.113.10, a 192.168.1.2 behind nata, b 192.168.2.2 behind natb"
}

down() {
  require_root
  local ns pids
  for ns in $(namespaces); do
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    if [ -n "$pids" ]; then
      kill -TERM $pids 2>/dev/null || true
      for _ in 1 2 3 4 5 6 7 8 9 10; do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        [ -z "$pids" ] && break
        sleep 0.1
      done
      [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
    fi
  done
  for ns in $(namespaces); do
    ip netns del "$ns" && echo "deleted $ns"
  done
  echo "nat testbed '$PREFIX' down"
}

run_in() {
  [ $# -ge 2 ] || fail "usage: nat.sh exec HOST CMD..."
  local ns="${PREFIX}-$1"
  ip netns list | cut -d' ' -f1 | grep -Fxq "$ns" || fail "no host $1 (namespace $ns)"
  shift
  exec ip netns exec "$ns" "$@"
}

# block / unblock: each NAT answers connections towards the other NAT with a TCP reset.
block() {
  require_root
  ip netns exec "${PREFIX}-nata" nft add rule inet filter block ip daddr 203.0.113.2 meta l4proto tcp reject with tcp reset
  ip netns exec "${PREFIX}-natb" nft add rule inet filter block ip daddr 203.0.113.1 meta l4proto tcp reject with tcp reset
}

unblock() {
  require_root
  ip netns exec "${PREFIX}-nata" nft flush chain inet filter block
  ip netns exec "${PREFIX}-natb" nft flush chain inet filter block
}

command=${1:-help}
shift || true
case "$command" in
  up) up "$@" ;;
  down) down ;;
  exec) run_in "$@" ;;
  block) block ;;
  unblock) unblock ;;
  list) namespaces ;;
  help | -h | --help) sed -n '2,25s/^# \{0,1\}//p' "$0" ;;
  *)
    sed -n '2,25s/^# \{0,1\}//p' "$0" >&2
    exit 64
    ;;
esac
