#!/usr/bin/env bash
# The rows of BENCHMARKS.md "Bridged generations" (issue 17): a bridged
# session (3.1 client to a 6.x server, and 6.x to 3.1: the simulated
# server refuses the client's encoder as a real one does, and xpraproxy
# translates; and a bencode-only client as the 3.1 HTML5 client, to a 6.x
# server) beside pass-through sessions of each generation, in the same
# run, interleaved, three rounds: stream with 64 KiB draws (1 and 100
# sessions, MB/s and proxy CPU per MB/s) and idle memory at 2,000 sessions.
# Usage (as root): bash bench/bridge.sh [OUT.jsonl]
set -u
out=${1:-bench-bridge.jsonl}
bin=${XPRAPROXY:-bin/xpraproxy}
: > "$out"
run() { "$bin" bench --json "$@" 2>/dev/null | tail -1 >> "$out"; tail -1 "$out" | cut -c1-160; }
for rep in 1 2 3; do
  for n in 1 100; do
    run --peer=3.1 --workload=stream --sessions=$n --duration=5s
    run --peer=3.1 --server-peer=6.x --workload=stream --sessions=$n --duration=5s
    run --peer=6.x --workload=stream --sessions=$n --duration=5s
    run --peer=6.x --server-peer=3.1 --workload=stream --sessions=$n --duration=5s
    run --peer=3.1-html5 --workload=stream --sessions=$n --duration=5s
    run --peer=3.1-html5 --server-peer=6.x --workload=stream --sessions=$n --duration=5s
  done
  run --peer=3.1 --workload=idle --sessions=2000 --duration=15s
  run --peer=3.1 --server-peer=6.x --workload=idle --sessions=2000 --duration=15s
  run --peer=6.x --server-peer=3.1 --workload=idle --sessions=2000 --duration=15s
  run --peer=3.1-html5 --server-peer=6.x --workload=idle --sessions=2000 --duration=15s
done
