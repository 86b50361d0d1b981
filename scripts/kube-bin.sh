#!/usr/bin/env bash
# Builds a real kube-apiserver and kubectl from the Go module proxy (module internal/testenv/k8s) and caches them, so the e2e
# tests talk to the real thing; also fakekubelet, our kubelet stand-in for exec/attach/port-forward/logs, and the
# root filesystems of its container images (scripts/rootfs.sh, ~1.5 minutes the first time). The first build takes
# ~10 minutes on 2 cores; later calls return at once.
# Prints the directory holding the binaries. Also installs etcd from Debian when it is missing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
version=v1.37.2
cache=${WARREN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/warren}
bin="$cache/k8s-$version/bin"
mkdir -p "$bin"

ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1"
ldflags="$ldflags -X k8s.io/component-base/version.gitMinor=37 -X k8s.io/component-base/version.gitTreeState=clean"
for cmd in kube-apiserver kubectl; do
  if [ ! -x "$bin/$cmd" ]; then
    echo "building $cmd $version from Go modules into $bin (first time only, several minutes)..." >&2
    (cd "$root/internal/testenv/k8s" && go build -trimpath -ldflags "$ldflags" -o "$bin/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd")
    mv "$bin/$cmd.tmp" "$bin/$cmd"
  fi
done

# fakekubelet is our own kubelet stand-in (internal/testenv/k8s/cmd/fakekubelet): rebuilt whenever its sources or the module's
# go.mod/go.sum are newer than the cached binary. -trimpath shares the Go build cache with the builds above: ~45 s
# right after them, ~10 s when only fakekubelet changed.
fk="$bin/fakekubelet"
if [ ! -x "$fk" ] || [ -n "$(find "$root/internal/testenv/k8s/fakekubelet" "$root/internal/testenv/k8s/cmd/fakekubelet" \
    "$root/internal/testenv/k8s/go.mod" "$root/internal/testenv/k8s/go.sum" -newer "$fk" -print -quit)" ]; then
  echo "building fakekubelet into $bin..." >&2
  (cd "$root/internal/testenv/k8s" && go build -trimpath -o "$fk.tmp" ./cmd/fakekubelet)
  mv "$fk.tmp" "$fk"
fi

if ! command -v etcd >/dev/null 2>&1; then
  echo "installing etcd-server from Debian..." >&2
  if [ "$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq etcd-server >&2
fi
"$root/scripts/rootfs.sh" >/dev/null
echo "$bin"
