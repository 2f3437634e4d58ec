#!/usr/bin/env bash
# The fleet rows of BENCHMARKS.md: login setups/s with the sql module on
# PostgreSQL beside sqlite and beside xpra's own proxy (3.1.3, sqlite),
# interleaved, three of each; then 9,000 idle sessions per instance with
# and without --session-registry: the registry's writes per second
# (PostgreSQL's own counters over the measured phase) and what it costs
# in memory. Starts its own PostgreSQL (Debian's) on a free port.
# Usage (as root): bash bench/fleet.sh [OUT.jsonl]
set -eu
out=${1:-bench-fleet.jsonl}
bin=${XPRAPROXY:-bin/xpraproxy}
pgbin=/usr/lib/postgresql/15/bin
dir=$(mktemp -d /tmp/xpraproxy-fleet-bench-XXXX)
chown postgres "$dir"
port=$((20000 + RANDOM % 20000))
pw=bench$RANDOM$RANDOM
runuser -u postgres -- $pgbin/initdb -D "$dir/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 >/dev/null
runuser -u postgres -- $pgbin/pg_ctl -D "$dir/data" -l "$dir/pg.log" -w \
  -o "-k $dir -p $port -c listen_addresses=127.0.0.1 -c max_connections=300" start >/dev/null
trap 'runuser -u postgres -- $pgbin/pg_ctl -D "$dir/data" -m immediate stop >/dev/null; rm -rf "$dir"' EXIT
psql() { runuser -u postgres -- $pgbin/psql -h "$dir" -p $port -U postgres -qtA "$@"; }
psql -c "CREATE ROLE xpra LOGIN PASSWORD '$pw'" -c "CREATE DATABASE xpra OWNER xpra"
uri="postgresql://xpra:$pw@127.0.0.1:$port/xpra"
: > "$out"
run() { "$bin" bench --json "$@" 2>/dev/null | tail -1 >> "$out"; tail -1 "$out"; }
for rep in 1 2 3; do
  run --proxy=xpraproxy --workload=connect --sessions=20 --duration=5s
  run --proxy=xpraproxy --users="$uri" --workload=connect --sessions=20 --duration=5s
  run --proxy=xpra --workload=connect --sessions=20 --duration=5s
done
stats() { psql -d xpra -c "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted FROM pg_stat_database WHERE datname = 'xpra'"; }
# The registry's steady state: sampled 10 s apart while 9,000 sessions sit
# idle (the run opens them in the first seconds, then idles 30 s).
for rep in 1 2 3; do
  run --proxy=xpraproxy --workload=idle --sessions=9000 --duration=30s
  run --proxy=xpraproxy --workload=idle --sessions=9000 --duration=30s --proxy-args="--session-registry=$uri" &
  sleep 18; s1=$(stats); sleep 10; s2=$(stats); wait
  rows=$(psql -d xpra -c "SELECT count(*) FROM xpraproxy_sessions")
  echo "{\"registry_sample_10s\":[\"$s1\",\"$s2\"]}" | tee -a "$out"
done
