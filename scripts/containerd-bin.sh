#!/usr/bin/env bash
# Installs Debian's containerd and runc when they are missing: internal/testenv/containerdtest runs the real containerd
# (with ctr, the runc v2 shim and runc) for the volume-mode tests (and the node mode's). Prints containerd's version.
set -euo pipefail
missing=()
command -v containerd >/dev/null 2>&1 || missing+=(containerd)
command -v ctr >/dev/null 2>&1 || missing+=(containerd)
command -v containerd-shim-runc-v2 >/dev/null 2>&1 || missing+=(containerd)
if ! command -v runc >/dev/null 2>&1 && [ ! -x /usr/sbin/runc ]; then missing+=(runc); fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} from Debian..." >&2
  if [ "$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq containerd runc >&2
fi
containerd --version
