#!/usr/bin/env bash
# Install everything the tests need and run them. As root it also installs the netfilter tools
# (the kernel tests then load every output into throwaway network namespaces); without root
# those tests skip and say why.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  for pkg in iptables nftables ipset iproute2 conntrack python3-nftables; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test,kernel]'

# Twice: output must not depend on the hash seed (the golden files pin the bytes).
PYTHONHASHSEED=0 .venv/bin/python -m pytest "$@"
PYTHONHASHSEED=4242 .venv/bin/python -m pytest -q tests/golden
