#!/usr/bin/env bash
# Runs the comparison matrix of BENCHMARKS.md, one JSON line per run, in
# one go on one machine. Usage: bash bench/matrix.sh [OUT.jsonl]
# xpra's own proxy forks a ~50 MB process per connection, so its runs use
# fewer sessions (XPRA_SESSIONS) and are compared per session.
set -u
out=${1:-bench-results.jsonl}
bin=${XPRAPROXY:-bin/xpraproxy}
xs=${XPRA_SESSIONS:-20}
: > "$out"
run() { "$bin" bench --json "$@" 2>/dev/null | tail -1 >> "$out"; tail -1 "$out"; }
for p in xpraproxy haproxy direct; do run --proxy=$p --workload=idle --sessions=1000 --duration=12s; done
run --proxy=xpra --workload=idle --sessions=$xs --duration=5s
for p in xpraproxy haproxy direct; do run --proxy=$p --workload=idle --sessions=9000 --duration=12s; done
# Throughput and latency runs are repeated (the 2-core machine is shared by
# the generator, the simulated servers and the proxy, so single runs vary).
for rep in 1 2 3; do
  for n in 1 100; do
    for p in xpraproxy haproxy direct; do run --proxy=$p --workload=stream --sessions=$n --duration=5s; done
  done
  for p in xpraproxy haproxy direct; do run --proxy=$p --workload=pingpong --sessions=1000 --duration=10s; done
done
run --proxy=xpra --workload=stream --sessions=1 --duration=5s
run --proxy=xpra --workload=stream --sessions=$xs --duration=5s
run --proxy=xpra --workload=pingpong --sessions=$xs --duration=10s
for p in xpraproxy haproxy direct xpra; do run --proxy=$p --workload=connect --sessions=20 --duration=5s; done
# The soak: 9,000 sessions streaming crc-checked draws, 20 slow readers
# flooded by their server, under a 256 MiB global budget.
run --proxy=xpraproxy --workload=soak --sessions=9000 --slow=20 --size=4096 --window=1 --duration=60s \
  --proxy-args="--max-session-buffer=4M --max-buffer-total=256M"
