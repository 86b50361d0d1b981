#!/usr/bin/env bash
# Builds SeaweedFS's weed (module internal/testenv/s3, from the Go module proxy) and caches it: the S3-compatible server that the
# object-storage tests (internal/testenv/s3test) start, so that uploads are checked by a real store, never by a fake. The
# first build takes several minutes on 2 cores (modules downloaded and compiled); later calls return at once.
# Prints the directory holding weed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# The cache directory is named after the pinned version: bump both together (internal/testenv/s3test.WeedVersion).
version=$(cd "$root/internal/testenv/s3" && go list -m -f '{{.Version}}' github.com/seaweedfs/seaweedfs)
cache=${WARREN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/warren}
bin="$cache/seaweedfs-$version/bin"
mkdir -p "$bin"
if [ ! -x "$bin/weed" ]; then
  echo "building SeaweedFS weed $version from Go modules into $bin (first time only, several minutes)..." >&2
  start=$(date +%s)
  (cd "$root/internal/testenv/s3" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$bin/weed.tmp" github.com/seaweedfs/seaweedfs/weed)
  mv "$bin/weed.tmp" "$bin/weed"
  echo "built weed in $(( $(date +%s) - start ))s ($(du -h "$bin/weed" | cut -f1))" >&2
fi
echo "$bin"
