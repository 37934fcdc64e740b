#!/usr/bin/env bash
# Installs what the network-namespace tests need: `ip` (iproute2), and with the argument `nat`
# also `nft` (nftables, for the NAT testbed in nat.sh). Does nothing when they are already
# there; otherwise installs the missing packages with apt-get (Debian/Ubuntu, as root).
set -euo pipefail

missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
if [ "${1:-}" = nat ]; then
  command -v nft >/dev/null 2>&1 || missing+=(nftables)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
[ "$(id -u)" -eq 0 ] || { echo "setup.sh: installing ${missing[*]} needs root" >&2; exit 1; }
command -v apt-get >/dev/null 2>&1 || { echo "setup.sh: no apt-get; install ${missing[*]}" >&2; exit 1; }
echo "setup.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
