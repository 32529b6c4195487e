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
#   TOLLGATE_BIN=path  use this binary instead of building one
#   CARGO_TARGET_DIR   build directory (default /var/tmp/tollgate-target)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-10}"
ROUNDS="${ROUNDS:-3}"
PG_HOST="${PG_HOST:-127.0.0.1}"
PG_PORT="${PG_PORT:-5432}"
PG_SUPERUSER="${PG_SUPERUSER:-postgres}"
TG_PG_PORT="${TG_PG_PORT:-16432}"
TG_API_PORT="${TG_API_PORT:-18009}"
SCALE="${SCALE:-10}"
CLIENTS="${CLIENTS:-8}"
THREADS="${THREADS:-2}"
ROWS="${ROWS:-1000000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/tollgate-target}"

BENCH_PASSWORD="tg_bench_password"
ADMIN_KEY="bench-admin-key-$(date +%s)-$$"
ROWS_SQL="SELECT g, md5(g::text), repeat('x',200) FROM generate_series(1,$ROWS) g"

die() { echo "error: $*" >&2; exit 1; }
log() { echo "$*" >&2; }

for tool in psql pgbench python3; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found on PATH"
done

# --- temp dir, gateway lifecycle --------------------------------------------------------------

TMP="$(mktemp -d)"
GW_PID=""

stop_gateway() {
  [ -n "$GW_PID" ] || return 0
  if kill -0 "$GW_PID" 2>/dev/null; then
    kill -TERM "$GW_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$GW_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$GW_PID" 2>/dev/null || true
  fi
  wait "$GW_PID" 2>/dev/null || true
  GW_PID=""
}

cleanup() {
  stop_gateway
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

gateway_log_tail() {
  log "--- gateway log (last 30 lines) ---"
  tail -n 30 "$TMP/gateway.log" >&2 || true
}

# --- connections ------------------------------------------------------------------------------

# on SIDE CMD...: runs CMD with libpq variables pointing at the direct server or the gateway.
on() {
  local side="$1"; shift
  if [ "$side" = direct ]; then
    env PGHOST="$PG_HOST" PGPORT="$PG_PORT" PGUSER=tg_bench PGDATABASE=tg_bench \
      PGPASSWORD="$BENCH_PASSWORD" PGSSLMODE=disable "$@"
  else
    env PGHOST=127.0.0.1 PGPORT="$TG_PG_PORT" PGUSER=bench PGDATABASE=bench \
      PGPASSWORD="$ADMIN_KEY" PGSSLMODE=disable "$@"
  fi
}

superuser_psql() {
  env PGSSLMODE=disable psql -X -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" \
    -U "$PG_SUPERUSER" -d postgres "$@"
}

# --- measurement helpers ----------------------------------------------------------------------

RESULTS="$TMP/results"
: >"$RESULTS"
record() { echo "$1 $2 $3" >>"$RESULTS"; }   # metric side value

CLK_TCK="$(getconf CLK_TCK)"
# Gateway CPU time (user + system) in clock ticks; fields 14 and 15 of /proc/PID/stat.
gw_ticks() { sed 's/^.*) //' "/proc/$GW_PID/stat" | awk '{ print $12 + $13 }'; }
gw_mem_kib() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$GW_PID/status"; }
now() { date +%s.%N; }
calc() { python3 -c "print(f'{$1:$2}')"; }

# The two sides in this round's order: direct first in odd rounds, gateway first in even ones.
sides() { if [ $(($1 % 2)) -eq 1 ]; then echo "direct gateway"; else echo "gateway direct"; fi; }

check_gateway_alive() {
  kill -0 "$GW_PID" 2>/dev/null || { gateway_log_tail; die "the gateway exited"; }
}

# run_pgbench SIDE METRIC ARGS...: records tps and latency; for the gateway also CPU per tx.
run_pgbench() {
  local side="$1" metric="$2"; shift 2
  local out t0=0 t1=0 tps lat ntx
  [ "$side" = gateway ] && t0="$(gw_ticks)"
  out="$(on "$side" pgbench -n "$@" 2>&1)" || {
    echo "$out" >&2
    [ "$side" = gateway ] && gateway_log_tail
    die "pgbench ($side $metric) failed"
  }
  [ "$side" = gateway ] && t1="$(gw_ticks)"
  tps="$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' <<<"$out")"
  lat="$(sed -n 's/^latency average = \([0-9.]*\) ms$/\1/p' <<<"$out")"
  ntx="$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*$/\1/p' <<<"$out")"
  [ -n "$tps" ] && [ -n "$lat" ] && [ -n "$ntx" ] && [ "$ntx" -gt 0 ] || {
    echo "$out" >&2
    die "cannot parse pgbench output ($side $metric)"
  }
  record "tps_$metric" "$side" "$tps"
  record "lat_$metric" "$side" "$lat"
  local extra=""
  if [ "$side" = gateway ]; then
    local cpu_us
    cpu_us="$(calc "($t1 - $t0) * 1e6 / $CLK_TCK / $ntx" .1f)"
    record "cpu_$metric" gateway "$cpu_us"
    extra="  gateway CPU ${cpu_us} µs/tx"
  fi
  log "$(printf '  %-8s %-10s tps %10.1f  latency %.3f ms  tx %d%s' \
    "$side" "$metric" "$tps" "$lat" "$ntx" "$extra")"
}

# run_timed SIDE METRIC CMD...: records wall time of CMD run against SIDE.
run_timed() {
  local side="$1" metric="$2"; shift 2
  local t0 t1 c0=0 c1=0 secs extra=""
  check_gateway_alive
  [ "$side" = gateway ] && c0="$(gw_ticks)"
  t0="$(now)"
  on "$side" "$@" >/dev/null || {
    [ "$side" = gateway ] && gateway_log_tail
    die "$metric ($side) failed"
  }
  t1="$(now)"
  [ "$side" = gateway ] && c1="$(gw_ticks)"
  secs="$(calc "$t1 - $t0" .3f)"
  record "$metric" "$side" "$secs"
  [ "$side" = gateway ] && extra="  gateway CPU $(calc "($c1 - $c0) / $CLK_TCK" .2f) s"
  log "$(printf '  %-8s %-10s %7.3f s  %8.0f rows/s%s' \
    "$side" "$metric" "$secs" "$(calc "$ROWS / $secs" .0f)" "$extra")"
}

# --- setup ------------------------------------------------------------------------------------

pg_isready -h "$PG_HOST" -p "$PG_PORT" -q 2>/dev/null || die "PostgreSQL is not reachable on $PG_HOST:$PG_PORT"

if [ -n "${TOLLGATE_BIN:-}" ]; then
  BIN="$TOLLGATE_BIN"
else
  log "building tollgate (release)"
  cargo build --release --quiet -p tollgate
  BIN="$CARGO_TARGET_DIR/release/tollgate"
fi
[ -x "$BIN" ] || die "gateway binary not found: $BIN"

log "preparing role and database tg_bench"
superuser_psql -v pw="$BENCH_PASSWORD" <<'SQL'
SELECT 'CREATE ROLE tg_bench LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tg_bench')
\gexec
ALTER ROLE tg_bench LOGIN PASSWORD :'pw';
SELECT 'CREATE DATABASE tg_bench OWNER tg_bench' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'tg_bench')
\gexec
SQL

have_scale=0
if [ "$(on direct psql -X -A -t -c "SELECT to_regclass('pgbench_branches') IS NOT NULL")" = t ]; then
  have_scale="$(on direct psql -X -A -t -c "SELECT count(*) FROM pgbench_branches")"
fi
if [ "$have_scale" != "$SCALE" ]; then
  log "initialising pgbench tables (scale $SCALE)"
  on direct pgbench -i -q -s "$SCALE" >/dev/null 2>"$TMP/pgbench-init.log" \
    || { cat "$TMP/pgbench-init.log" >&2; die "pgbench -i failed"; }
fi
on direct psql -X -q -v ON_ERROR_STOP=1 -c "SET client_min_messages = warning" \
  -c "CREATE TABLE IF NOT EXISTS bench_copy (g int, h text, pad text)"

log "generating $ROWS rows of CSV"
on direct psql -X -q -v ON_ERROR_STOP=1 -c "\\copy ($ROWS_SQL) TO '$TMP/rows.csv' CSV"
log "  $(calc "$(stat -c %s "$TMP/rows.csv") / 1048576" .1f) MiB"

POLICY="${POLICY:-on}"
case "$POLICY" in
  on) POLICY_TOML="" ;;
  off) POLICY_TOML=$'[policy]\ndefault_rules = false\n' ;;
  *) echo "POLICY must be on or off" >&2; exit 2 ;;
esac

cat >"$TMP/tollgate.toml" <<EOF
${POLICY_TOML}
[listen]
api = "127.0.0.1:$TG_API_PORT"
postgres = "127.0.0.1:$TG_PG_PORT"

[[connections]]
name = "bench"
kind = "postgres"
url = "postgres://tg_bench@$PG_HOST:$PG_PORT/tg_bench?sslmode=disable"
password_env = "TG_BENCH_PASSWORD"
groups = ["bench", "admin"]
EOF

log "starting the gateway"
TOLLGATE_ADMIN_KEY="$ADMIN_KEY" TG_BENCH_PASSWORD="$BENCH_PASSWORD" \
  "$BIN" up --config "$TMP/tollgate.toml" --data-dir "$TMP/data" >"$TMP/gateway.log" 2>&1 &
GW_PID=$!
up=0
for _ in $(seq 1 300); do
  kill -0 "$GW_PID" 2>/dev/null || break
  if grep -q "is up" "$TMP/gateway.log" && pg_isready -h 127.0.0.1 -p "$TG_PG_PORT" -q 2>/dev/null; then
    up=1
    break
  fi
  sleep 0.1
done
if [ "$up" != 1 ]; then
  gateway_log_tail
  kill -0 "$GW_PID" 2>/dev/null || die "the gateway exited during startup"
  die "the gateway did not come up within 30 s"
fi
on gateway psql -X -q -A -t -c "SELECT 1" >/dev/null \
  || { gateway_log_tail; die "cannot query through the gateway"; }
record rss_start gateway "$(calc "$(gw_mem_kib VmRSS) / 1024" .1f)"

# --- rounds -----------------------------------------------------------------------------------

for round in $(seq 1 "$ROUNDS"); do
  order="$(sides "$round")"
  log "round $round/$ROUNDS (order: $order)"
  for mode in simple prepared; do
    for side in $order; do
      check_gateway_alive
      run_pgbench "$side" "$mode" -S -M "$mode" -c "$CLIENTS" -j "$THREADS" -T "$DURATION"
    done
  done
  for side in $order; do
    check_gateway_alive
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

check_gateway_alive
record rss_peak gateway "$(calc "$(gw_mem_kib VmHWM) / 1024" .1f)"
stop_gateway
on direct psql -X -q -c "TRUNCATE bench_copy" || true

# --- summary ----------------------------------------------------------------------------------

python3 - "$RESULTS" "$CLIENTS" "$ROWS" <<'PY'
import sys
from collections import defaultdict
from statistics import median

vals = defaultdict(list)
for line in open(sys.argv[1]):
    metric, side, value = line.split()
    vals[(metric, side)].append(float(value))
clients = sys.argv[2]
rows = int(sys.argv[3])
n = f"{rows // 1000000}M" if rows % 1000000 == 0 else str(rows)

def med(metric, side):
    return median(vals[(metric, side)])

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
