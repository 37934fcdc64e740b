#!/usr/bin/env bash
# Installs what the network-namespace tests need: `ip` (iproute2). Does nothing when it is
# already there; otherwise installs it with apt-get (Debian/Ubuntu, as root).
set -euo pipefail

if command -v ip >/dev/null 2>&1; then
  exit 0
fi
[ "$(id -u)" -eq 0 ] || { echo "setup.sh: 'ip' is missing and installing iproute2 needs root" >&2; exit 1; }
command -v apt-get >/dev/null 2>&1 || { echo "setup.sh: 'ip' is missing and there is no apt-get; install iproute2" >&2; exit 1; }
echo "setup.sh: installing iproute2"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends iproute2
