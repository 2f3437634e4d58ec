#!/usr/bin/env bash
# xpraproxy's test command (README.md; .ci/run calls exactly this).
# On a fresh Debian 12 machine it installs what the tests need (the real
# xpra 3.1.3 peers and their Python modules, Xvfb, HAProxy, Chromium and
# chromedriver for the HTML5 client), builds the xpra 6.x peers from PyPI
# once into a cache outside the repository (interop/xpra6.sh), downloads the Go
# modules, then runs gofmt, go vet, every test (with the race detector) and
# every benchmark for a few iterations so that they cannot rot.
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$PATH:/usr/local/go/bin"
export XPRA_NOTTY=1
# go-nvml's cgo wrappers call deprecated NVML functions: keep the build quiet.
export CGO_CFLAGS="${CGO_CFLAGS:--O2 -g} -Wno-deprecated-declarations"

packages=(systemd xpra python3-lz4 python3-rencode python3-brotli python3-gi-cairo xvfb xterm x11-utils imagemagick sqlite3 haproxy chromium chromium-driver libturbojpeg0-dev libffmpeg-nvenc-dev libopenh264-dev libpam0g-dev slapd ldap-utils postgresql mariadb-server xdotool xclip)
interop/ensure-packages.sh "${packages[@]}"
# The xpra 6.x server and client (newest 6.x from PyPI's source), built
# once per version into /var/cache/xpraproxy; later runs take a second.
XPRAPROXY_XPRA6="$(interop/xpra6.sh)"
export XPRAPROXY_XPRA6

go mod download
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi
go vet ./...
# The session core builds without cgo (docs/where.md): PAM, sqlite and the
# video encoders plug in from cmd/ (authn/pam, authn/sqliteauth, gpu/).
CGO_ENABLED=0 go build ./frame/ ./bridge/ ./route/ ./relay/
go test -race -count=1 -timeout 30m ./...
# Allocation counts through sync.Pool mean nothing under -race (it drops
# what is put back on purpose): those tests run once without it.
go test -count=1 -run 'Allocat' ./relay/
go test -run '^$' -bench . -benchtime 20x -count=1 ./...
