#!/usr/bin/env bash
# Installs helm from the Go module proxy into the same cache as kube-bin.sh (first time only, a few minutes on
# 2 cores; later calls return at once) and prints the path of the helm binary. test/helm finds it there, or via
# WARREN_HELM.
set -euo pipefail
version=v3.22.0
cache=${WARREN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/warren}
dir="$cache/helm-$version"
if [ ! -x "$dir/helm" ]; then
  echo "installing helm $version from Go modules into $dir (first time only, several minutes)..." >&2
  mkdir -p "$dir"
  # Build into a temporary GOBIN and move the binary into place, so an interrupted build never leaves a half-written
  # binary that later calls would take for a good one. GOFLAGS is cleared so the project's settings (e.g. -mod) do
  # not apply to this separate module.
  tmp=$(mktemp -d "$dir/.build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  # The -X flags are those of helm's own Makefile: without them `helm version` says "v3.22" and `helm template` and
  # `helm lint` assume Kubernetes v1.20 (charts requiring newer then fail to render). Helm v3.22.0 is built against
  # client-go v0.37, hence Kubernetes 1.37.
  ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags="$ldflags -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=37"
  done
  (cd "$tmp" && GOFLAGS= GOBIN="$tmp" go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$version")
  mv "$tmp/helm" "$dir/helm"
fi
echo "$dir/helm"
