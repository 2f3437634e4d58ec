#!/usr/bin/env bash
# Flow control and the read size (issue 25, docs/memory.md): the soak
# (200 streaming sessions, 50 slow readers flooded by their servers),
# stream and pingpong, xpraproxy at its default --read-size, at 64K, as
# root, and HAProxy, interleaved in one sitting. Usage: bash bench/flow.sh [OUT.jsonl]
set -u
out=${1:-flow.jsonl}
bin=${XPRAPROXY:-bin/xpraproxy}
: > "$out"
run() { "$bin" bench --json "$@" 2>/dev/null | tail -1 >> "$out"; tail -1 "$out" | cut -c1-160; sleep 3; }
for i in 1 2 3; do
  run --proxy=xpraproxy --workload=soak --sessions=200 --slow=50 --duration=15s
  run --proxy=haproxy --workload=soak --sessions=200 --slow=50 --duration=15s
  run --proxy=xpraproxy --proxy-args=--read-size=64K --workload=soak --sessions=200 --slow=50 --duration=15s
  run --proxy=xpraproxy-root --workload=soak --sessions=200 --slow=50 --duration=15s
done
for i in 1 2; do
  for args in "--proxy=xpraproxy" "--proxy=haproxy" "--proxy=xpraproxy --proxy-args=--read-size=64K"; do
    run $args --workload=stream --sessions=100 --duration=8s
    run $args --workload=pingpong --sessions=100 --duration=8s
  done
done
