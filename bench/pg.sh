#!/usr/bin/env bash
# PostgreSQL benchmark: the gateway against a direct connection, side by side in one run.
#
# Measures, interleaving direct and gateway runs within each round (order alternates per round):
#   1. pgbench select-only throughput, 8 clients, simple and prepared protocol (median tps),
#      plus the gateway's CPU time per transaction (from /proc/PID/stat);
#   2. added latency with a single client (pgbench -S -M prepared -c 1);
#   3. a 1M-row result (ROWS): `\copy (SELECT ...) TO '/dev/null'` and a plain SELECT without
#      FETCH_COUNT (the whole result streams through in one go);
#   4. `\copy bench_copy FROM file` of 1M rows;
#   5. the gateway's resident memory at start and its peak (VmRSS, VmHWM).
# Prints one line per run on stderr, then a summary table on stdout. Ratios are
# gateway/direct for throughput and direct_time/gateway_time for timings (1.0 = parity,
# higher is better).
#
# Needs PostgreSQL on 127.0.0.1:5432 with a superuser reachable without password (trust), psql,
# pgbench and python3. Creates role and database tg_bench (pgbench scale 10) if missing.
#
# Run:  bench/pg.sh
#   DURATION=10        seconds per pgbench run
#   ROUNDS=3           rounds; medians are reported
#   PG_HOST=127.0.0.1 PG_PORT=5432 PG_SUPERUSER=postgres   the direct server
#   TG_PG_PORT=16432 TG_API_PORT=18009                     gateway listeners
#   SCALE=10 CLIENTS=8 THREADS=2 ROWS=1000000
#   POLICY=on|off      default guardrail pack on (default) or off
#   AUDIT=strict|best-effort   the connection's audit mode (default strict: each command's
#                      event is durable before the command is forwarded)
#   TOLLGATE_BIN=path  use this binary instead of building one
#   CARGO_TARGET_DIR   build directory (default /var/tmp/tollgate-target)
set -euo pipefail
cd "$(dirname "$0")/.."

TG_PG_PORT="${TG_PG_PORT:-16432}"
TG_API_PORT="${TG_API_PORT:-18009}"
ROWS="${ROWS:-1000000}"
POLICY="${POLICY:-on}"
AUDIT="${AUDIT:-strict}"
case "$AUDIT" in
  strict|best-effort) ;;
  *) echo "AUDIT must be strict or best-effort" >&2; exit 2 ;;
esac
case "$POLICY" in
  on) POLICY_TOML="" ;;
  off) POLICY_TOML=$'[policy]\ndefault_rules = false\n' ;;
  *) echo "POLICY must be on or off" >&2; exit 2 ;;
esac

BENCH_DB=tg_bench
GW_CONNECTION=bench
# Direct first in odd rounds, gateway first in even ones.
SIDES=(direct gateway)
PGBENCH_FMT='  %-8s %-10s tps %10.1f  latency %.3f ms  tx %d%s'
TIMED_FMT='  %-8s %-10s %7.3f s  %8.0f rows/s%s'
ROWS_SQL="SELECT g, md5(g::text), repeat('x',200) FROM generate_series(1,$ROWS) g"

# shellcheck source=bench/lib.sh
source bench/lib.sh

# --- setup ------------------------------------------------------------------------------------

bench_setup
ensure_pgbench_tables
on direct psql -X -q -v ON_ERROR_STOP=1 -c "SET client_min_messages = warning" \
  -c "CREATE TABLE IF NOT EXISTS bench_copy (g int, h text, pad text)"

log "generating $ROWS rows of CSV"
on direct psql -X -q -v ON_ERROR_STOP=1 -c "\\copy ($ROWS_SQL) TO '$TMP/rows.csv' CSV"
log "  $(calc "$(stat -c %s "$TMP/rows.csv") / 1048576" .1f) MiB"

start_gateway "$POLICY_TOML" "$(gateway_connection "$GW_CONNECTION" "audit = \"$AUDIT\"")"

# --- rounds -----------------------------------------------------------------------------------

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
  for side in $order; do
    run_timed "$side" copy_out psql -X -q -v ON_ERROR_STOP=1 -c "\\copy ($ROWS_SQL) TO '/dev/null'"
  done
  for side in $order; do
    run_timed "$side" select psql -X -q -A -t -v ON_ERROR_STOP=1 -c "$ROWS_SQL"
  done
  for side in $order; do
    on direct psql -X -q -v ON_ERROR_STOP=1 -c "TRUNCATE bench_copy"
    run_timed "$side" copy_in psql -X -q -v ON_ERROR_STOP=1 -c "\\copy bench_copy FROM '$TMP/rows.csv' CSV"
  done
done

finish_gateway
on direct psql -X -q -c "TRUNCATE bench_copy" || true

# --- summary ----------------------------------------------------------------------------------

summarise <<'PY'
n = f"{rows // 1000000}M" if rows % 1000000 == 0 else str(rows)

def row(label, direct, gateway, ratio):
    print(f"{label:<32}{direct:<12}{gateway:<12}{ratio}")

print()
row("metric", "direct", "gateway", "ratio")
for mode in ("simple", "prepared"):
    d, g = med(f"tps_{mode}", "direct"), med(f"tps_{mode}", "gateway")
    row(f"pgbench -S {mode} c{clients} (tps)", f"{d:.0f}", f"{g:.0f}", f"{g / d:.2f}")
d, g = med("lat_c1", "direct"), med("lat_c1", "gateway")
row("latency c1 prepared (ms)", f"{d:.3f}", f"{g:.3f}", f"{(g - d) * 1000:+.0f} µs")
for metric, label in (("copy_out", rf"{n}-row \copy out (s)"),
                      ("select", f"{n}-row SELECT (s)"),
                      ("copy_in", rf"{n}-row \copy in (s)")):
    d, g = med(metric, "direct"), med(metric, "gateway")
    row(label, f"{d:.3f}", f"{g:.3f}", f"{d / g:.2f}")
print(f"{'gateway CPU per tx (µs)':<32}simple {med('cpu_simple', 'gateway'):.1f}, "
      f"prepared {med('cpu_prepared', 'gateway'):.1f}")
print(f"{'gateway RSS (MiB)':<32}start {med('rss_start', 'gateway'):.1f}, "
      f"peak {med('rss_peak', 'gateway'):.1f}")
PY
