#!/usr/bin/env bash
# Builds the container images of fakekubelet, our kubelet stand-in (internal/testenv/k8s/fakekubelet), from Debian's packages and
# caches them, so that the e2e tests' containers run in real root filesystems:
#
#   busybox          Debian's busybox and libc, every applet linked (sh, cat, tar, sha256sum, ...)   ~14 MB
#   busybox-notools  the same without tar, cpio and any hashing applet, and no file named busybox     ~14 MB
#   debian           mmdebstrap --variant=minbase bookworm, docs, man pages and locales left out    ~130 MB
#   distroless       no shell at all: /app (internal/testenv/k8s/cmd/fakeapp, static Go) and /etc/passwd         ~2 MB
#
# Each image is DIR/NAME/rootfs (the tree) and DIR/NAME/config.json (its entrypoint, command, environment, working
# directory and user, as in an OCI image config), where DIR is ${WARREN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/warren}/rootfs.
# An image is rebuilt when its recipe (the build_NAME function below, and fakeapp's source for distroless) changed.
# The first build takes about 1.5 minutes (debian: ~55 s; mmdebstrap is installed from Debian when missing); later
# calls return at once. Prints DIR. Needs root (the trees are owned by root, as images are).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${WARREN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/warren}
dir="$cache/rootfs"
mkdir -p "$dir"

if [ "$(id -u)" != 0 ]; then
  echo "rootfs.sh: building the images needs root (their files belong to root, and fakekubelet runs containers as root)" >&2
  exit 1
fi

path_env='"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"'

# apt_download PKG... fetches Debian packages into the current directory (the host's architecture), updating the
# package lists once if apt does not know them.
apt_download() {
  if ! apt-get download -qq "$@" >/dev/null 2>&1; then
    apt-get update -qq >&2
    apt-get download -qq "$@" >&2
  fi
}

# base_tree ROOTFS makes the directories and accounts every image has.
base_tree() {
  local r=$1
  mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,etc,root,home,proc,sys,dev,run,var/tmp,tmp}
  chmod 1777 "$r/tmp" "$r/var/tmp"
  chmod 700 "$r/root"
  printf 'root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$r/etc/passwd"
  printf 'root:x:0:\ndaemon:x:1:\ntty:x:5:\nnogroup:x:65534:\n' >"$r/etc/group"
}

# busybox_tree OUT BINARY [SKIP...] makes a busybox image as the official busybox:glibc is: Debian's dynamic busybox
# (its sh looks commands up in PATH and executes them, as any shell; Debian's static build runs its applets inside sh
# without a link or a new process: FEATURE_SH_STANDALONE) with Debian's libc, installed as BINARY, every applet but
# the SKIP ones a link to it.
busybox_tree() {
  local out=$1 binary=$2 tmp p
  shift 2
  tmp=$(mktemp -d)
  (cd "$tmp" && apt_download busybox libc6 && dpkg-deb -x busybox_*.deb bb && dpkg-deb -x libc6_*.deb libc)
  base_tree "$out/rootfs"
  cp -a "$tmp/libc/." "$out/rootfs/"
  rm -rf "$out/rootfs/usr/share/doc" "$out/rootfs/usr/share/lintian"
  install -m 0755 "$tmp/bb/bin/busybox" "$out/rootfs$binary"
  for p in $("$tmp/bb/bin/busybox" --list-full); do
    case " $* " in *" ${p##*/} "*) continue ;; esac
    [ -e "$out/rootfs/$p" ] || ln -s "$binary" "$out/rootfs/$p"
  done
  rm -rf "$tmp"
  echo '{"Cmd":["sh"],"Env":['"$path_env"']}' >"$out/config.json"
}

build_busybox() {
  busybox_tree "$1" /bin/busybox
}

# busybox-notools: no tar, no archiver, no hashing applet; the binary is /bin/sh and there is no file named busybox.
# (The applets are still in the binary: `exec -a tar /bin/sh` reaches tar. Nothing in PATH does.)
build_busybox-notools() {
  busybox_tree "$1" /bin/sh tar cpio rpm rpm2cpio ar md5sum sha1sum sha256sum sha3sum sha512sum crc32 cksum sum
}

build_debian() {
  local out=$1
  command -v mmdebstrap >/dev/null 2>&1 || {
    echo "installing mmdebstrap from Debian..." >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >&2
  }
  # As debian:bookworm-slim: no documentation, man pages, info or translations, no apt lists.
  mmdebstrap --quiet --variant=minbase --mode=root --format=directory \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    bookworm "$out/rootfs" >&2
  rm -rf "$out/rootfs/dev/"* # device nodes: fakekubelet mounts a /dev of its own
  echo '{"Cmd":["bash"],"Env":['"$path_env"']}' >"$out/config.json"
}

build_distroless() {
  local out=$1
  mkdir -p "$out/rootfs"/{etc,tmp,root,home/nonroot,proc,sys,dev}
  chmod 1777 "$out/rootfs/tmp"
  chmod 700 "$out/rootfs/root"
  chown 65532:65532 "$out/rootfs/home/nonroot"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$out/rootfs/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\ntty:x:5:\nnonroot:x:65532:\n' >"$out/rootfs/etc/group"
  printf 'PRETTY_NAME="fakekubelet distroless (no shell)"\nID=distroless\n' >"$out/rootfs/etc/os-release"
  (cd "$root/internal/testenv/k8s" && CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$out/rootfs/app" ./cmd/fakeapp)
  echo '{"Entrypoint":["/app"],"Env":['"$path_env"']}' >"$out/config.json"
}

for name in busybox busybox-notools debian distroless; do
  recipe=$(declare -f "build_$name" base_tree)
  case $name in
    busybox*) recipe="$recipe $(declare -f busybox_tree)" ;;
    distroless) recipe="$recipe $(cat "$root"/internal/testenv/k8s/cmd/fakeapp/*.go)" ;;
  esac
  sum=$(printf '%s' "$recipe" | sha256sum | cut -d' ' -f1)
  if [ -f "$dir/$name/recipe" ] && [ "$(cat "$dir/$name/recipe")" = "$sum" ]; then
    continue
  fi
  echo "building image $name into $dir/$name (first time only)..." >&2
  start=$(date +%s)
  rm -rf "$dir/$name.tmp"
  mkdir -p "$dir/$name.tmp"
  "build_$name" "$dir/$name.tmp"
  echo "$sum" >"$dir/$name.tmp/recipe"
  # Containers still running on the old tree keep it (an overlay holds its lower directory).
  if [ -d "$dir/$name" ]; then mv "$dir/$name" "$dir/$name.old.$$"; fi
  mv "$dir/$name.tmp" "$dir/$name"
  rm -rf "$dir/$name.old.$$"
  echo "image $name: $(du -sh "$dir/$name/rootfs" | cut -f1) in $(( $(date +%s) - start ))s" >&2
done
echo "$dir"
