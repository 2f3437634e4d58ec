#!/usr/bin/env bash
# xpra's AES on the client link (issue 27, docs/aes.md) beside tcp, TLS
# and ssh, in both modes: memory per idle session and one session's
# stream throughput with the proxy's CPU per MB/s; HAProxy's tcp and TLS
# rows as the anchor. Usage: bash bench/aes.sh [OUT.jsonl]
set -u
out=${1:-aes.jsonl}
bin=${XPRAPROXY:-bin/xpraproxy}
: > "$out"
run() { "$bin" bench --json "$@" 2>/dev/null | tail -1 >> "$out"; tail -1 "$out" | cut -c1-200; sleep 5; }
for proxy in xpraproxy xpraproxy-root; do
  for tr in tcp ssl ssh aes; do run --proxy=$proxy --transport=$tr --workload=idle --sessions=1000 --duration=10s; done
  for tr in tcp aes aes-ctr; do run --proxy=$proxy --peer=6.x --transport=$tr --workload=idle --sessions=1000 --duration=10s; done
  for tr in tcp ssl ssh aes; do run --proxy=$proxy --transport=$tr --workload=stream --sessions=1 --duration=5s; done
  for tr in tcp aes aes-ctr; do run --proxy=$proxy --peer=6.x --transport=$tr --workload=stream --sessions=1 --duration=5s; done
done
for tr in tcp ssl; do run --proxy=haproxy --transport=$tr --workload=idle --sessions=1000 --duration=10s; done
for tr in tcp ssl; do run --proxy=haproxy --transport=$tr --workload=stream --sessions=1 --duration=5s; done
