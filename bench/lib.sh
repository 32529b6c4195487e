# shellcheck shell=bash
# Helpers shared by bench/pg.sh and bench/mask.sh; sourced, not run. The caller has already run
# `set -euo pipefail` and `cd` to the repository root, and sets its own defaults first:
#   TG_PG_PORT, TG_API_PORT, ROWS   knobs whose defaults differ between the scripts
#   BENCH_DB       role and database on the direct server (tg_bench, tg_mask); its password is
#                  ${BENCH_DB}_password, handed to the gateway in ${BENCH_DB^^}_PASSWORD
#   SIDES          array of the sides, in round 1's order: direct and one or more gateway sides;
#                  side `gateway-NAME` reaches gateway connection NAME, side `gateway` reaches
#                  connection $GW_CONNECTION
#   PGBENCH_FMT    printf format of run_pgbench's line: side, metric, tps, latency (ms), tx, extra
#   TIMED_FMT      printf format of run_timed's line: side, metric, seconds, [MiB/s,] rows/s, extra;
#                  MiB/s is passed only once the script has set RESULT_BYTES (bytes of the result)
# then calls bench_setup before anything else.

DURATION="${DURATION:-10}"
ROUNDS="${ROUNDS:-3}"
PG_HOST="${PG_HOST:-127.0.0.1}"
PG_PORT="${PG_PORT:-5432}"
PG_SUPERUSER="${PG_SUPERUSER:-postgres}"
SCALE="${SCALE:-10}"
CLIENTS="${CLIENTS:-8}"
THREADS="${THREADS:-2}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/tollgate-target}"

ADMIN_KEY="bench-admin-key-$(date +%s)-$$"
GW_PID=""
RESULT_BYTES=""

die() { echo "error: $*" >&2; exit 1; }
log() { echo "$*" >&2; }

# --- temp dir, gateway lifecycle --------------------------------------------------------------

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

gateway_log_tail() {
  log "--- gateway log (last 30 lines) ---"
  tail -n 30 "$TMP/gateway.log" >&2 || true
}

check_gateway_alive() {
  kill -0 "$GW_PID" 2>/dev/null || { gateway_log_tail; die "the gateway exited"; }
}

# side_failed SIDE MESSAGE: dies with MESSAGE, after the gateway log's tail for a gateway side.
side_failed() {
  if is_gateway "$1"; then gateway_log_tail; fi
  die "$2"
}

# --- connections ------------------------------------------------------------------------------

is_gateway() { [ "$1" != direct ]; }

# on SIDE CMD...: runs CMD with libpq variables pointing at the direct server or at one of the
# gateway's connections (see SIDES above).
on() {
  local side="$1"; shift
  case "$side" in
    direct)
      env PGHOST="$PG_HOST" PGPORT="$PG_PORT" PGUSER="$BENCH_DB" PGDATABASE="$BENCH_DB" \
        PGPASSWORD="$BENCH_PASSWORD" PGSSLMODE=disable "$@" ;;
    gateway|gateway-*)
      local conn="${side#gateway-}"
      [ "$side" != gateway ] || conn="$GW_CONNECTION"
      env PGHOST=127.0.0.1 PGPORT="$TG_PG_PORT" PGUSER=bench PGDATABASE="$conn" \
        PGPASSWORD="$ADMIN_KEY" PGSSLMODE=disable "$@" ;;
    *) die "unknown side $side" ;;
  esac
}

superuser_psql() {
  env PGSSLMODE=disable psql -X -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" \
    -U "$PG_SUPERUSER" -d postgres "$@"
}

# The sides in round R's order: SIDES rotated by one place per round, so that over as many rounds
# as there are sides each side runs once in each place.
sides() {
  local r=$((($1 - 1) % ${#SIDES[@]}))
  echo "${SIDES[@]:r}" "${SIDES[@]:0:r}" | xargs
}

# --- measurement helpers ----------------------------------------------------------------------

record() { echo "$1 $2 $3" >>"$RESULTS"; }   # metric side value

# Gateway CPU time (user + system) in clock ticks; fields 14 and 15 of /proc/PID/stat.
gw_ticks() { sed 's/^.*) //' "/proc/$GW_PID/stat" | awk '{ print $12 + $13 }'; }
gw_mem_kib() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$GW_PID/status"; }
now() { date +%s.%N; }
calc() { python3 -c "print(f'{$1:$2}')"; }

# run_pgbench SIDE METRIC ARGS...: records tps and latency; for the gateway also CPU per tx.
run_pgbench() {
  local side="$1" metric="$2"; shift 2
  local out t0=0 t1=0 tps lat ntx
  check_gateway_alive
  if is_gateway "$side"; then t0="$(gw_ticks)"; fi
  out="$(on "$side" pgbench -n "$@" 2>&1)" || {
    echo "$out" >&2
    side_failed "$side" "pgbench ($side $metric) failed"
  }
  if is_gateway "$side"; then t1="$(gw_ticks)"; fi
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
  if is_gateway "$side"; then
    local cpu_us
    cpu_us="$(calc "($t1 - $t0) * 1e6 / $CLK_TCK / $ntx" .1f)"
    record "cpu_$metric" "$side" "$cpu_us"
    extra="  gateway CPU ${cpu_us} µs/tx"
  fi
  # shellcheck disable=SC2059  # the format is the calling script's
  log "$(printf "$PGBENCH_FMT" "$side" "$metric" "$tps" "$lat" "$ntx" "$extra")"
}

# run_timed SIDE METRIC CMD...: records wall time of CMD run against SIDE, and for the gateway
# its CPU time over the run in seconds.
run_timed() {
  local side="$1" metric="$2"; shift 2
  local t0 t1 c0=0 c1=0 secs extra=""
  check_gateway_alive
  if is_gateway "$side"; then c0="$(gw_ticks)"; fi
  t0="$(now)"
  on "$side" "$@" >/dev/null || side_failed "$side" "$metric ($side) failed"
  t1="$(now)"
  if is_gateway "$side"; then c1="$(gw_ticks)"; fi
  secs="$(calc "$t1 - $t0" .3f)"
  record "$metric" "$side" "$secs"
  if is_gateway "$side"; then
    local cpu
    cpu="$(calc "($c1 - $c0) / $CLK_TCK" .2f)"
    record "cpu_$metric" "$side" "$cpu"
    extra="  gateway CPU $cpu s"
  fi
  local rate=("$(calc "$ROWS / $secs" .0f)")
  if [ -n "${RESULT_BYTES:-}" ]; then
    rate=("$(calc "$RESULT_BYTES / 1048576 / $secs" .1f)" "${rate[@]}")
  fi
  # shellcheck disable=SC2059  # the format is the calling script's
  log "$(printf "$TIMED_FMT" "$side" "$metric" "$secs" "${rate[@]}" "$extra")"
}

# summarise ARG... <<'PY': runs the Python summary on stdin after a prelude that defines vals
# ((metric, side) -> recorded values), med(metric, side) (their median), clients (CLIENTS) and
# rows (ROWS); the ARGs follow in sys.argv[4:].
SUMMARY_PRELUDE='
import sys
from collections import defaultdict
from statistics import median

vals = defaultdict(list)
for line in open(sys.argv[1]):
    metric, side, value = line.split()
    vals[(metric, side)].append(float(value))
clients = sys.argv[2]
rows = int(sys.argv[3])

def med(metric, side):
    return median(vals[(metric, side)])
'
summarise() {
  python3 -c "$SUMMARY_PRELUDE$(cat)" "$RESULTS" "$CLIENTS" "$ROWS" "$@"
}

# --- setup ------------------------------------------------------------------------------------

# bench_setup: checks the tools and the server, makes the temp dir (removed on exit, with the
# gateway stopped), builds the gateway unless TOLLGATE_BIN names one (sets BIN), and creates role
# and database BENCH_DB if missing.
bench_setup() {
  BENCH_PASSWORD="${BENCH_DB}_password"
  GW_PASSWORD_ENV="${BENCH_DB^^}_PASSWORD"

  local tool
  for tool in psql pgbench python3; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found on PATH"
  done

  TMP="$(mktemp -d)"
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  RESULTS="$TMP/results"
  : >"$RESULTS"
  CLK_TCK="$(getconf CLK_TCK)"

  pg_isready -h "$PG_HOST" -p "$PG_PORT" -q 2>/dev/null \
    || die "PostgreSQL is not reachable on $PG_HOST:$PG_PORT"

  if [ -n "${TOLLGATE_BIN:-}" ]; then
    BIN="$TOLLGATE_BIN"
  else
    log "building tollgate (release)"
    cargo build --release --quiet -p tollgate
    BIN="$CARGO_TARGET_DIR/release/tollgate"
  fi
  [ -x "$BIN" ] || die "gateway binary not found: $BIN"

  log "preparing role and database $BENCH_DB"
  superuser_psql -v db="$BENCH_DB" -v pw="$BENCH_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'db') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'db')
\gexec
ALTER ROLE :"db" LOGIN PASSWORD :'pw';
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'db') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')
\gexec
SQL
}

# ensure_pgbench_tables: (re)initialises the pgbench tables unless they are there at SCALE.
ensure_pgbench_tables() {
  local have_scale=0
  if [ "$(on direct psql -X -A -t -c "SELECT to_regclass('pgbench_branches') IS NOT NULL")" = t ]; then
    have_scale="$(on direct psql -X -A -t -c "SELECT count(*) FROM pgbench_branches")"
  fi
  if [ "$have_scale" != "$SCALE" ]; then
    log "initialising pgbench tables (scale $SCALE)"
    on direct pgbench -i -q -s "$SCALE" >/dev/null 2>"$TMP/pgbench-init.log" \
      || { cat "$TMP/pgbench-init.log" >&2; die "pgbench -i failed"; }
  fi
}

# gateway_connection NAME [LINE...]: a [[connections]] entry NAME for database BENCH_DB on the
# direct server, then the LINEs.
gateway_connection() {
  local name="$1"; shift
  cat <<EOF
[[connections]]
name = "$name"
kind = "postgres"
url = "postgres://$BENCH_DB@$PG_HOST:$PG_PORT/$BENCH_DB?sslmode=disable"
password_env = "$GW_PASSWORD_ENV"
groups = ["bench", "admin"]
EOF
  if [ $# -gt 0 ]; then printf '%s\n' "$@"; fi
}

# start_gateway TOML...: writes the gateway's config (the listeners, then each TOML section given)
# and starts it (sets GW_PID), waits until it is up and answers on every gateway side of SIDES,
# and records its resident memory.
start_gateway() {
  {
    cat <<EOF
[listen]
api = "127.0.0.1:$TG_API_PORT"
postgres = "127.0.0.1:$TG_PG_PORT"
EOF
    printf '\n%s\n' "$@"
  } >"$TMP/tollgate.toml"

  log "starting the gateway"
  env TOLLGATE_ADMIN_KEY="$ADMIN_KEY" "$GW_PASSWORD_ENV=$BENCH_PASSWORD" \
    "$BIN" up --config "$TMP/tollgate.toml" --data-dir "$TMP/data" >"$TMP/gateway.log" 2>&1 &
  GW_PID=$!
  local up=0
  for _ in $(seq 1 300); do
    kill -0 "$GW_PID" 2>/dev/null || break
    if grep -qs "is up" "$TMP/gateway.log" && pg_isready -h 127.0.0.1 -p "$TG_PG_PORT" -q 2>/dev/null; then
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
  local side
  for side in "${SIDES[@]}"; do
    is_gateway "$side" || continue
    on "$side" psql -X -q -A -t -c "SELECT 1" >/dev/null \
      || { gateway_log_tail; die "cannot query through the gateway ($side)"; }
  done
  record rss_start gateway "$(calc "$(gw_mem_kib VmRSS) / 1024" .1f)"
}

# finish_gateway: records the gateway's peak memory and stops it.
finish_gateway() {
  check_gateway_alive
  record rss_peak gateway "$(calc "$(gw_mem_kib VmHWM) / 1024" .1f)"
  stop_gateway
}
