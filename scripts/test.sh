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
  # The real-dockerd tests start their own dockerd inside a network namespace. docker.io's
  # install scripts would start one on this host: a policy-rc.d that refuses (exit 101) keeps
  # them from it, and is removed again if it was not there before.
  docker_missing=()
  for pkg in docker.io busybox-static; do
    dpkg -s "$pkg" >/dev/null 2>&1 || docker_missing+=("$pkg")
  done
  if [ ${#docker_missing[@]} -gt 0 ]; then
    added_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
      chmod 755 /usr/sbin/policy-rc.d
      added_policy=1
      trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${docker_missing[@]}" >/dev/null
    if [ -n "$added_policy" ]; then
      rm -f /usr/sbin/policy-rc.d
      trap - EXIT
    fi
  fi
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test,kernel,ansible]'

# Twice: output must not depend on the hash seed (the golden files pin the bytes).
PYTHONHASHSEED=0 .venv/bin/python -m pytest "$@"
PYTHONHASHSEED=4242 .venv/bin/python -m pytest -q tests/golden
