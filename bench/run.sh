#!/usr/bin/env bash
# `make bench`: builds the benchmark (bench/ is its own Go module), installs OpenSSH's server when it is missing,
# and runs every phase; flags go to `bench run` (e.g. -repeats 1). Results: bench/out/results.{md,json}.
set -euo pipefail
cd "$(dirname "$0")"
# rancher/remotedialer v0.5.2 declares go 1.26.10: the go command fetches that toolchain from the module proxy.
export GOTOOLCHAIN=go1.26.10+auto
if ! command -v sshd >/dev/null 2>&1 && [ ! -x /usr/sbin/sshd ]; then
	sudo=""
	[ "$(id -u)" = 0 ] || sudo=sudo
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq openssh-server openssh-client >/dev/null
fi
go build -o bin/bench .
go build -o bin/toxiproxy-server github.com/Shopify/toxiproxy/v2/cmd/server
exec bin/bench run -out out "$@"
