#!/usr/bin/env bash
# The rows of BENCHMARKS.md "Memory, TLS and tail latency beside HAProxy"
# (issue 16): every row with HAProxy (and direct where it applies) in the
# same run, interleaved, three rounds. Idle memory at 1k/3k/9k tcp
# sessions (RSS right after opening and at steady state, beside the live
# heap), idle TLS at 2,000 beside HAProxy terminating TLS, stream with 1
# and 100 sessions over tcp and TLS with CPU per MB/s, pingpong at 1,000,
# connect with real hellos of both generations (xpraproxy also with
# --burst-gc-percent=200, the login-rate setting).
# Usage (as root): bash bench/memory.sh [OUT.jsonl]
set -u
out=${1:-bench-memory.jsonl}
bin=${XPRAPROXY:-bin/xpraproxy}
: > "$out"
run() { "$bin" bench --json "$@" 2>/dev/null | tail -1 >> "$out"; tail -1 "$out" | cut -c1-160; }
for rep in 1 2 3; do
  for n in 1000 3000 9000; do
    for p in xpraproxy haproxy; do run --proxy=$p --workload=idle --sessions=$n --duration=15s; done
  done
  for p in xpraproxy haproxy; do run --proxy=$p --transport=ssl --workload=idle --sessions=2000 --duration=15s; done
  for t in tcp ssl; do
    for n in 1 100; do
      for p in xpraproxy haproxy; do run --proxy=$p --transport=$t --workload=stream --sessions=$n --duration=5s; done
      [ $t = tcp ] && run --proxy=direct --workload=stream --sessions=$n --duration=5s
    done
  done
  for p in xpraproxy haproxy direct; do run --proxy=$p --workload=pingpong --sessions=1000 --duration=10s; done
  for peer in 3.1 6.x; do
    run --peer=$peer --real-hello --proxy=xpraproxy --workload=connect --sessions=20 --duration=5s
    run --peer=$peer --real-hello --proxy=xpraproxy --workload=connect --sessions=20 --duration=5s --proxy-args=--burst-gc-percent=200
    for p in haproxy direct; do run --peer=$peer --real-hello --proxy=$p --workload=connect --sessions=20 --duration=5s; done
  done
done
