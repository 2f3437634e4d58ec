#!/usr/bin/env bash
# Density in both modes (issue 24): xpraproxy unprivileged, xpraproxy as
# root (a supervisor handing sessions to `xpraproxy worker` processes:
# RSS, PSS and CPU summed over the tree) and HAProxy, in one run,
# interleaved, ROUNDS rounds: idle tcp at 1,000 and 9,000 sessions, idle
# TLS at 500 and 2,000 (HAProxy terminating TLS), stream with 1 and 100 sessions
# over tcp and TLS. One JSON line per run in
# bench/results/density-<commit>.jsonl, then a markdown table of medians
# (range) with the ratios to HAProxy and root / non-root, and the
# marginal cost of one more idle session between the two counts.
#
# Usage (as root; builds bin/xpraproxy from the work tree unless
# XPRAPROXY names a binary): bash bench/density.sh [OUT.jsonl]
# Environment:
#   DENSITY_SCALE=1      multiplies every session count (0.05: a smoke run)
#   DENSITY_ROUNDS=3     rounds
#   DENSITY_IDLE=15s     measured phase of an idle run
#   DENSITY_STREAM=5s    measured phase of a stream run
#   DENSITY_TABLE=FILE   only print the table of an earlier run's rows
#   DENSITY_ONLY=idle    only the idle rows
# At full size the bench process holds 18,000 sockets at 9,000 sessions
# (clients and simulated servers) and xpraproxy as many: under the open
# file limit of 20,000 per process (Go raises the soft limit to the hard).
set -u
cd "$(dirname "$0")/.."

table() {
  python3 - "$1" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
proxies = ["xpraproxy", "xpraproxy-root", "haproxy"]
def key(r): return (r["workload"], r.get("transport") or "tcp", r["sessions"])
groups = {}
for r in rows:
    groups.setdefault(key(r), {}).setdefault(r["proxy"], []).append(r)
def cpu_per_mbs(r):
    return r["proxy_cpu_percent"] / r["mbytes_per_s"] if r["mbytes_per_s"] > 0 else float("nan")
metrics = {
    "idle": [("RSS B/session", lambda r: r["proxy_rss_bytes_per_session"], "{:,.0f}"),
             ("PSS B/session", lambda r: r.get("proxy_pss_bytes_per_session", 0), "{:,.0f}")],
    "stream": [("MB/s", lambda r: r["mbytes_per_s"], "{:,.0f}"),
               ("proxy CPU % per MB/s", cpu_per_mbs, "{:.3f}")],
}
def med(rs, f):
    v = [f(r) for r in rs]
    return statistics.median(v), min(v), max(v)
def ratio(a, b):
    return "{:.2f}×".format(a / b) if a and b else "–"
print("| workload | transport | sessions | figure | xpraproxy | xpraproxy-root | HAProxy | non-root / HAProxy | root / HAProxy | root / non-root |")
print("| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
counted, bad = set(), []
for k in sorted(groups, key=lambda k: (k[0] != "idle", k[1] != "tcp", k[2])):
    g = groups[k]
    for r in sum(g.values(), []):
        if r.get("proxy_counted"):
            counted.add((r["proxy"], r["proxy_counted"]))
        if r["failed"] or r["ready"] != r["sessions"] or r.get("bad_data"):
            bad.append("{} {} {} {}: {} ready, {} failed, {} bad {}".format(r["proxy"], *k, r["ready"], r["failed"], r.get("bad_data", 0), r.get("last_error", "")))
    for name, f, fmt in metrics.get(k[0], []):
        cells, m = [], {}
        for p in proxies:
            if p not in g:
                cells.append("–")
                continue
            m[p], lo, hi = med(g[p], f)
            cells.append(fmt.format(m[p]) + (" ({}–{})".format(fmt.format(lo), fmt.format(hi)) if len(g[p]) > 1 else ""))
        x, root, ha = m.get("xpraproxy"), m.get("xpraproxy-root"), m.get("haproxy")
        print("| {} | {} | {:,} | {} | {} | {} | {} | {} | {} | {} |".format(
            k[0], k[1], k[2], name, *cells, ratio(x, ha), ratio(root, ha), ratio(root, x)))
# The marginal cost of an idle session: between two session counts of
# one transport, the difference of the medians of what the proxy's tree
# grew by, over the difference of the counts. Fixed costs (a root proxy's
# worker starting with the first login, code pages touched by the first
# logins) cancel; what is left is what one more session costs.
pairs = {"tcp": (1000, 9000), "ssl": (500, 2000)}
for t, (lo_n, hi_n) in pairs.items():
    lo_g, hi_g = groups.get(("idle", t, lo_n)), groups.get(("idle", t, hi_n))
    if not lo_g or not hi_g:
        continue
    for name, total in [("RSS", lambda r: r["proxy_rss_bytes"] - r["proxy_rss_baseline_bytes"]),
                        ("PSS", lambda r: r.get("proxy_pss_bytes", 0) - r.get("proxy_pss_baseline_bytes", 0))]:
        m = {}
        for p in proxies:
            if p in lo_g and p in hi_g:
                m[p] = (statistics.median(total(r) for r in hi_g[p]) - statistics.median(total(r) for r in lo_g[p])) / (hi_n - lo_n)
        cells = ["{:,.0f}".format(m[p]) if p in m else "–" for p in proxies]
        x, root, ha = m.get("xpraproxy"), m.get("xpraproxy-root"), m.get("haproxy")
        print("| idle | {} | {:,} → {:,} | marginal {} B/session | {} | {} | {} | {} | {} | {} |".format(
            t, lo_n, hi_n, name, *cells, ratio(x, ha), ratio(root, ha), ratio(root, x)))
print()
print("Medians (range) of {} runs; RSS, PSS and CPU sum each proxy's process tree. Counted:".format(len(rows)))
for p, c in sorted(counted):
    print("- {}: {}".format(p, c))
if bad:
    print()
    print("Runs with failed, missing or corrupted sessions:")
    for b in bad:
        print("- " + b)
EOF
}

if [ -n "${DENSITY_TABLE:-}" ]; then
  table "$DENSITY_TABLE"
  exit
fi

scale=${DENSITY_SCALE:-1}
rounds=${DENSITY_ROUNDS:-3}
idle=${DENSITY_IDLE:-15s}
stream=${DENSITY_STREAM:-5s}
commit=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- . ':!bench/results' || commit=$commit-dirty
if [ -z "${XPRAPROXY:-}" ]; then
  CGO_CFLAGS="-O2 -g -Wno-deprecated-declarations" go build -o bin/xpraproxy ./cmd/xpraproxy || exit 1
fi
bin=${XPRAPROXY:-bin/xpraproxy}
mkdir -p bench/results
out=${1:-bench/results/density-$commit.jsonl}
: > "$out"
n() { python3 -c "print(max(1, round($1 * $scale)))"; }
errlog=$(mktemp)
trap 'rm -f "$errlog"' EXIT
run() {
  local line
  line=$("$bin" bench --json "$@" 2>"$errlog" | tail -1)
  case $line in
    "{"*) echo "$line" >> "$out"; echo "$line" | cut -c1-160 ;;
    *) echo "FAILED (no row): $*: $(tail -2 "$errlog")" ;;
  esac
}
started=$(date +%s)
echo "density: $bin ($commit), scale $scale, $rounds rounds, rows in $out"
for rep in $(seq "$rounds"); do
  for s in 1000 9000; do
    for p in xpraproxy xpraproxy-root haproxy; do run --proxy=$p --workload=idle --sessions="$(n $s)" --duration="$idle"; done
  done
  for s in 500 2000; do
    for p in xpraproxy xpraproxy-root haproxy; do run --proxy=$p --transport=ssl --workload=idle --sessions="$(n $s)" --duration="$idle"; done
  done
  [ "${DENSITY_ONLY:-}" = idle ] && continue
  for t in tcp ssl; do
    for s in 1 100; do
      for p in xpraproxy xpraproxy-root haproxy; do run --proxy=$p --transport=$t --workload=stream --sessions="$(n $s)" --duration="$stream"; done
    done
  done
done
echo "density: $(( $(date +%s) - started )) s"
echo
table "$out"
