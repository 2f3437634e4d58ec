#!/usr/bin/env bash
# ssh:// beside tcp and TLS (issue 27, docs/ssh.md): memory per idle
# session, stream throughput with the proxy's CPU per MB/s, and new
# sessions per second. Usage: bash bench/ssh.sh [OUT.jsonl]
set -u
out=${1:-ssh.jsonl}
bin=${XPRAPROXY:-bin/xpraproxy}
: > "$out"
run() { "$bin" bench --json "$@" 2>/dev/null | tail -1 >> "$out"; tail -1 "$out"; sleep 5; }
for tr in tcp ssl ssh; do run --transport=$tr --workload=idle --sessions=1000 --duration=10s; done
for tr in tcp ssl ssh; do run --transport=$tr --workload=stream --sessions=1 --duration=5s; done
for tr in tcp ssh; do run --transport=$tr --workload=connect --sessions=20 --duration=5s; done
