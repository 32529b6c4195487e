#!/usr/bin/env bash
# Audit benchmark: what strict audit costs, direct vs. the gateway with strict audit and with
# best-effort audit, side by side in one run; then the log's own figures.
#
# One gateway serves two connections to the same database: `strict` (the default: each command's
# event is durable, in the journal, before the command is forwarded) and `besteffort`
# (`audit = "best-effort"`: events are recorded asynchronously). There is no mode that records
# nothing; best-effort is the lightest. Three sides, interleaved within each round (the order
# rotates from one round to the next): direct, gateway-strict, gateway-besteffort. Measures:
#   1. pgbench select-only, 8 clients, simple and prepared protocol: tps, strict vs. best-effort,
#      and the gateway's CPU time per transaction (from /proc/PID/stat);
#   2. added latency with a single client (pgbench -S -M prepared -c 1);
#   3. the gateway's resident memory at start and its peak (VmRSS, VmHWM);
#   4. the log alone (no network): events/s the writer sustains, best-effort and durable
#      (crates/tollgate-store/examples/audit_throughput.rs), and verification speed.
# Prints one line per run on stderr, then a summary table on stdout.
#
# Needs PostgreSQL on 127.0.0.1:5432 with a superuser reachable without password (trust), psql,
# pgbench and python3. Creates role and database tg_audit and the pgbench tables (scale 10).
#
# Run:  bench/audit.sh
#   DURATION=10        seconds per pgbench run
#   ROUNDS=3           rounds; medians are reported
#   PG_HOST=127.0.0.1 PG_PORT=5432 PG_SUPERUSER=postgres   the direct server
#   TG_PG_PORT=16434 TG_API_PORT=18011                     gateway listeners
#   SCALE=10 CLIENTS=8 THREADS=2
#   EVENTS=200000      events for the log-alone figures (0 skips them)
#   TOLLGATE_BIN=path  use this binary instead of building one
#   CARGO_TARGET_DIR   build directory (default /var/tmp/tollgate-target)
set -euo pipefail
cd "$(dirname "$0")/.."

TG_PG_PORT="${TG_PG_PORT:-16434}"
TG_API_PORT="${TG_API_PORT:-18011}"
ROWS=0
EVENTS="${EVENTS:-200000}"

BENCH_DB=tg_audit
SIDES=(direct gateway-strict gateway-besteffort)
PGBENCH_FMT='  %-18s %-9s tps %9.1f  latency %7.3f ms  tx %7d%s'
TIMED_FMT='  %-18s %-9s %7.3f s  %8.0f rows/s%s'

# shellcheck source=bench/lib.sh
source bench/lib.sh

bench_setup
ensure_pgbench_tables

start_gateway \
  "$(gateway_connection strict)" \
  "$(gateway_connection besteffort 'audit = "best-effort"')"

for round in $(seq 1 "$ROUNDS"); do
  order="$(sides "$round")"
  log "round $round/$ROUNDS (order: $order)"
  for mode in simple prepared; do
    for side in $order; do
      run_pgbench "$side" "$mode" -S -M "$mode" -c "$CLIENTS" -j "$THREADS" -T "$DURATION"
    done
  done
  for side in $order; do
    run_pgbench "$side" c1 -S -M prepared -c 1 -j 1 -T "$DURATION"
  done
done

finish_gateway
if grep -qi "panic" "$TMP/gateway.log"; then
  log "warning: the gateway log mentions a panic:"
  grep -i -m 5 "panic" "$TMP/gateway.log" >&2 || true
fi

LOG_FIGURES=""
if [ "$EVENTS" -gt 0 ]; then
  log "the log alone: $EVENTS events"
  LOG_FIGURES="$(cargo run -q --release -p tollgate-store --example audit_throughput -- "$EVENTS" 2>&1)" \
    || die "audit_throughput failed: $LOG_FIGURES"
  log "$LOG_FIGURES"
fi

summarise "$LOG_FIGURES" <<'PY'
log_figures = sys.argv[4]

def row(label, direct, strict, loose, ratio=""):
    print(f"{label:<32}{direct:<12}{strict:<16}{loose:<20}{ratio}".rstrip())

def met(value, target):
    return "met" if value >= target else "MISSED"

print()
print("target: pgbench -S with strict audit ≥ 0.85 of best-effort")
row("metric", "direct", "gateway-strict", "gateway-besteffort", "ratios")
for mode in ("simple", "prepared"):
    d, s, b = (med(f"tps_{mode}", x) for x in ("direct", "gateway-strict", "gateway-besteffort"))
    row(f"pgbench -S {mode} c{clients} (tps)", f"{d:.0f}", f"{s:.0f}", f"{b:.0f}",
        f"strict/best-effort {s / b:.2f} ({met(s / b, 0.85)}); "
        f"strict {s / d:.2f}, best-effort {b / d:.2f} of direct")
for mode in ("simple", "prepared"):
    cs, cb = med(f"cpu_{mode}", "gateway-strict"), med(f"cpu_{mode}", "gateway-besteffort")
    row(f"gateway CPU, -S {mode} (µs/tx)", "-", f"{cs:.1f}", f"{cb:.1f}",
        f"strict − best-effort {cs - cb:+.1f} µs/tx")
d, s, b = (med("lat_c1", x) for x in ("direct", "gateway-strict", "gateway-besteffort"))
row("latency c1 prepared (ms)", f"{d:.3f}", f"{s:.3f}", f"{b:.3f}",
    f"strict {(s - d) * 1000:+.0f} µs, best-effort {(b - d) * 1000:+.0f} µs over direct")
print(f"{'gateway RSS (MiB)':<32}start {med('rss_start', 'gateway'):.1f}, "
      f"peak {med('rss_peak', 'gateway'):.1f}")
if log_figures:
    print()
    print("the log alone:")
    for line in log_figures.splitlines():
        print(f"  {line}")
PY
