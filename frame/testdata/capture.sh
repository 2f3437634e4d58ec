#!/usr/bin/env bash
# Regenerate frame/testdata/capture: a short recording of a real xpra 3.1.3
# session (server started with `xpra start`, client `xpra attach` under
# Xvfb, password authentication so the hello/challenge exchange is in it),
# taken by the recording relay in ./record. mmap is off so that pixels travel
# in draw packets (as raw chunks) rather than through shared memory.
# Run from the repository root:
#   bash frame/testdata/capture.sh
# CAPTURE_OUT=DIR writes the capture elsewhere (the live test does).
# XPRA=PATH records another xpra (the 6.x wrapper from interop/xpra6.sh:
#   XPRA=$(interop/xpra6.sh) CAPTURE_OUT=frame/testdata/capture6 bash frame/testdata/capture.sh).
set -euo pipefail
export XPRA_NOTTY=1
root=$(pwd)
out=${CAPTURE_OUT:-$root/frame/testdata/capture}
xpra=${XPRA:-xpra}
work=$(mktemp -d)
# 6.x keeps its runtime files (sockets, X cookie) here, apart from 3.1.3's.
export XDG_RUNTIME_DIR="$work/run"
mkdir -m 700 "$XDG_RUNTIME_DIR"
# xpra 6.5.5's server fails every connection with --mmap=no (its window
# compressor imports the module the option blocks): 6.x servers keep mmap
# on; the client's --mmap=no alone turns it off for the session.
server_mmap="--mmap=no"
"$xpra" --version 2>/dev/null | grep -q '^xpra v[0-5]\.' || server_mmap=""
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sport=$(free_port); rport=$(free_port)
sdisp=:$((200 + RANDOM % 400)); cdisp=:$((700 + RANDOM % 200))
quiet="--mdns=no --pulseaudio=no --notifications=no --speaker=no --microphone=no --webcam=no --printing=no"
# 6.x has no --dbus-proxy (its wrapper's config turns dbus off).
# 6.x takes module options after ':' only.
# 6.x checks the username against the server's own account.
auth="password:value=secret" user=$(id -un)
if "$xpra" --version 2>/dev/null | grep -q '^xpra v[0-5]\.'; then quiet="$quiet --dbus-proxy=no"; auth="password,value=secret" user=foo; fi
cleanup() {
  "$xpra" stop "$sdisp" --socket-dirs="$work/sock" >/dev/null 2>&1 || true
  kill ${xvfb:-} ${rec:-} ${client:-} 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
[ -z "${CAPTURE_DEBUG:-}" ] || trap 'tail -n 15 "$work"/*.log "$work"/run/xpra/*/server.log; cleanup' EXIT
echo -n secret > "$work/pw"
mkdir -p "$work/sock"
"$xpra" start "$sdisp" --start="xterm -title capture -geometry 40x8" --bind-tcp=127.0.0.1:$sport \
  --tcp-auth=$auth --daemon=yes --systemd-run=no $server_mmap --socket-dir="$work/sock" --socket-dirs="$work/sock" $quiet >"$work/server.log" 2>&1
for _ in $(seq 50); do "$xpra" list --socket-dirs="$work/sock" 2>/dev/null | grep -q "LIVE session at $sdisp" && break; sleep 0.2; done
Xvfb "$cdisp" -screen 0 1024x768x24 -nolisten tcp >/dev/null 2>&1 & xvfb=$!
mkdir -p "$work/cap"
go run ./frame/testdata/record -listen 127.0.0.1:$rport -target 127.0.0.1:$sport -out "$work/cap" -limit 196608 \
  >"$work/record.log" 2>&1 & rec=$!
# `go run` compiles the recorder first: on a loaded machine (CI runs the
# real-peer packages beside this one) that takes far longer than on an idle one.
for _ in $(seq 900); do grep -q listening "$work/record.log" 2>/dev/null && break; sleep 0.1; done
grep -q listening "$work/record.log" 2>/dev/null || { echo "the recorder did not start:"; cat "$work/record.log"; exit 1; }
DISPLAY=$cdisp "$xpra" attach "tcp://$user@127.0.0.1:$rport/" --password-file="$work/pw" --opengl=no --mmap=no $quiet \
  >"$work/client.log" 2>&1 & client=$!
sleep 8
kill $client 2>/dev/null || true; wait $client 2>/dev/null || true
wait $rec 2>/dev/null || true
rm -rf "$out"; mkdir -p "$out"
cp "$work/cap/c2s.bin" "$work/cap/s2c.bin" "$out/"
ls -l "$out"
