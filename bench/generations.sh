#!/usr/bin/env bash
# The stream and connect rows of BENCHMARKS.md ("Peers of both
# generations"), with simulated peers shaped like xpra 3.1 (rencode, flat
# hellos) and 6.x (rencodeplus, nested hellos, lz4 frames), and the connect
# rate with real client hellos; HAProxy and direct in the same run,
# interleaved, three of each. Usage: bash bench/generations.sh [OUT.jsonl]
# (xpra's own proxy is 3.1.3: it cannot relay 6.x peers, so it is not here.)
set -u
out=${1:-bench-generations.jsonl}
bin=${XPRAPROXY:-bin/xpraproxy}
: > "$out"
run() { "$bin" bench --json "$@" 2>/dev/null | tail -1 >> "$out"; tail -1 "$out"; }
for rep in 1 2 3; do
  for peer in 3.1 6.x; do
    for n in 1 100; do
      for p in xpraproxy haproxy direct; do run --peer=$peer --proxy=$p --workload=stream --sessions=$n --duration=5s; done
    done
    for real in false true; do
      for p in xpraproxy haproxy direct; do run --peer=$peer --real-hello=$real --proxy=$p --workload=connect --sessions=20 --duration=5s; done
    done
  done
done
