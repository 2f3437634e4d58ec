#!/bin/bash
# Plain tcp, ws, ssl and wss sessions through xpraproxy's one port (issue 6):
# memory per idle session and stream throughput. Usage: bench/transports.sh OUT.jsonl
B=${B:-bin/xpraproxy}
out=${1:-transports.jsonl}
: > "$out"
for tr in tcp ws ssl wss; do
  $B bench --json --transport=$tr --workload=idle --sessions=2000 --duration=10s | tail -1 >> "$out"; sleep 15
  for n in 1 10; do
    $B bench --json --transport=$tr --workload=stream --sessions=$n --duration=5s | tail -1 >> "$out"; sleep 5
  done
done
echo done
