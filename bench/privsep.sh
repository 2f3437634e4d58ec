#!/bin/bash
# xpraproxy in-process vs privilege-separated (root) benchmarks, issue 5.
B=${B:-bin/xpraproxy}
out=${1:-privsep.jsonl}
: > $out
for p in xpraproxy xpraproxy-root; do
  $B bench --json --proxy=$p --workload=idle --sessions=5000 --duration=10s | tail -1 >> $out; sleep 20
  $B bench --json --proxy=$p --workload=connect --sessions=20 --duration=5s | tail -1 >> $out; sleep 20
  $B bench --json --proxy=$p --workload=stream --sessions=100 --duration=5s | tail -1 >> $out; sleep 10
done
$B bench --json --proxy=xpraproxy-root --workload=idle --sessions=200 --duration=10s --proxy-args=--proxy-workers=connection | tail -1 >> $out; sleep 20
$B bench --json --proxy=xpraproxy-root --workload=connect --sessions=20 --duration=5s --proxy-args="--proxy-workers=connection" | tail -1 >> $out
echo done
