#!/usr/bin/env bash
# Regenerate frame/testdata/capture: a short recording of a real xpra 3.1.3
# session (server started with `xpra start`, client `xpra attach` under
# Xvfb, password authentication so the hello/challenge exchange is in it),
# taken by the recording relay in ./record. mmap is off so that pixels travel
# in draw packets (as raw chunks) rather than through shared memory.
# Run from the repository root:
#   bash frame/testdata/capture.sh
# CAPTURE_OUT=DIR writes the capture elsewhere (the live test does).
set -euo pipefail
export XPRA_NOTTY=1
root=$(pwd)
out=${CAPTURE_OUT:-$root/frame/testdata/capture}
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sport=$(free_port); rport=$(free_port)
sdisp=:$((200 + RANDOM % 400)); cdisp=:$((700 + RANDOM % 200))
quiet="--mdns=no --pulseaudio=no --notifications=no --speaker=no --microphone=no --webcam=no --printing=no --dbus-proxy=no"
cleanup() {
  xpra stop "$sdisp" >/dev/null 2>&1 || true
  kill ${xvfb:-} ${rec:-} ${client:-} 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
echo -n secret > "$work/pw"
xpra start "$sdisp" --start="xterm -title capture -geometry 40x8" --bind-tcp=127.0.0.1:$sport \
  --tcp-auth=password,value=secret --daemon=yes --systemd-run=no --mmap=no $quiet >"$work/server.log" 2>&1
for _ in $(seq 50); do xpra list 2>/dev/null | grep -q "LIVE session at $sdisp" && break; sleep 0.2; done
Xvfb "$cdisp" -screen 0 1024x768x24 -nolisten tcp >/dev/null 2>&1 & xvfb=$!
mkdir -p "$work/cap"
go run ./frame/testdata/record -listen 127.0.0.1:$rport -target 127.0.0.1:$sport -out "$work/cap" -limit 196608 \
  >"$work/record.log" 2>&1 & rec=$!
for _ in $(seq 100); do grep -q listening "$work/record.log" 2>/dev/null && break; sleep 0.1; done
DISPLAY=$cdisp xpra attach "tcp://foo@127.0.0.1:$rport/" --password-file="$work/pw" --opengl=no --mmap=no $quiet \
  >"$work/client.log" 2>&1 & client=$!
sleep 8
kill $client 2>/dev/null || true; wait $client 2>/dev/null || true
wait $rec 2>/dev/null || true
rm -rf "$out"; mkdir -p "$out"
cp "$work/cap/c2s.bin" "$work/cap/s2c.bin" "$out/"
ls -l "$out"
