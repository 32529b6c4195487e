#!/usr/bin/env bash
# Masking benchmark: what masking PII in results costs, direct vs. the gateway with masking on
# and with masking off, side by side in one run.
#
# One gateway serves two connections to the same database: `mask` (masking on, the default) and
# `plain` (`masking = false`). Three sides, interleaved within each round (the order rotates from
# one round to the next): direct, gateway-mask, gateway-plain. Measures:
#   1. a ROWS-row result full of PII (`SELECT * FROM pii`, read whole by psql, no FETCH_COUNT):
#      wall time, MiB/s, and the gateway CPU masking adds per KiB of result (mask − plain);
#   2. 1000-row pages (`SELECT * FROM pii LIMIT 1000`, pgbench, 8 clients): tps, gateway CPU;
#   3. pgbench select-only, 8 clients, simple and prepared protocol: tps, masking on vs. off,
#      and the gateway's CPU time per transaction (from /proc/PID/stat);
#   4. the gateway's resident memory at start and its peak (VmRSS, VmHWM).
# Before the rounds it checks the results once: gateway-plain must return exactly what direct
# returns, gateway-mask the same number of rows with no clear email, card or IBAN left.
# Prints one line per run on stderr, then a summary table on stdout. Ratios are side/direct for
# throughput and direct_time/side_time for timings (1.0 = parity, higher is better).
#
# Needs PostgreSQL on 127.0.0.1:5432 with a superuser reachable without password (trust), psql,
# pgbench and python3. Creates role and database tg_mask, table pii (ROWS rows) and the pgbench
# tables (scale 10) if missing.
#
# Run:  bench/mask.sh
#   DURATION=10        seconds per pgbench run
#   ROUNDS=3           rounds; medians are reported
#   PG_HOST=127.0.0.1 PG_PORT=5432 PG_SUPERUSER=postgres   the direct server
#   TG_PG_PORT=16433 TG_API_PORT=18010                     gateway listeners
#   SCALE=10 CLIENTS=8 THREADS=2 ROWS=100000
#   TOLLGATE_BIN=path  use this binary instead of building one
#   CARGO_TARGET_DIR   build directory (default /var/tmp/tollgate-target)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-10}"
ROUNDS="${ROUNDS:-3}"
PG_HOST="${PG_HOST:-127.0.0.1}"
PG_PORT="${PG_PORT:-5432}"
PG_SUPERUSER="${PG_SUPERUSER:-postgres}"
TG_PG_PORT="${TG_PG_PORT:-16433}"
TG_API_PORT="${TG_API_PORT:-18010}"
SCALE="${SCALE:-10}"
CLIENTS="${CLIENTS:-8}"
THREADS="${THREADS:-2}"
ROWS="${ROWS:-100000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/tollgate-target}"

BENCH_PASSWORD="tg_mask_password"
ADMIN_KEY="bench-admin-key-$(date +%s)-$$"
SELECT_ALL="SELECT * FROM pii"
SELECT_PAGE="SELECT * FROM pii LIMIT 1000"
# Bump when the generated data changes, so that an existing table is rebuilt.
DATA_VERSION="mask.sh data v1, $ROWS rows"
SIDES=(direct gateway-mask gateway-plain)

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

# on SIDE CMD...: runs CMD with libpq variables pointing at the direct server or at one of the
# gateway's two connections (gateway-mask → `mask`, gateway-plain → `plain`).
on() {
  local side="$1"; shift
  case "$side" in
    direct)
      env PGHOST="$PG_HOST" PGPORT="$PG_PORT" PGUSER=tg_mask PGDATABASE=tg_mask \
        PGPASSWORD="$BENCH_PASSWORD" PGSSLMODE=disable "$@" ;;
    gateway-mask|gateway-plain)
      env PGHOST=127.0.0.1 PGPORT="$TG_PG_PORT" PGUSER=bench PGDATABASE="${side#gateway-}" \
        PGPASSWORD="$ADMIN_KEY" PGSSLMODE=disable "$@" ;;
    *) die "unknown side $side" ;;
  esac
}

superuser_psql() {
  env PGSSLMODE=disable psql -X -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" \
    -U "$PG_SUPERUSER" -d postgres "$@"
}

is_gateway() { [ "$1" != direct ]; }

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

# The three sides in round R's order: rotated by one place per round, so that over three rounds
# each side runs once first, once second and once last.
sides() {
  local r=$((($1 - 1) % 3))
  echo "${SIDES[@]:r}" "${SIDES[@]:0:r}" | xargs
}

check_gateway_alive() {
  kill -0 "$GW_PID" 2>/dev/null || { gateway_log_tail; die "the gateway exited"; }
}

# run_pgbench SIDE METRIC ARGS...: records tps and latency; for the gateway also CPU per tx.
run_pgbench() {
  local side="$1" metric="$2"; shift 2
  local out t0=0 t1=0 tps lat ntx
  check_gateway_alive
  if is_gateway "$side"; then t0="$(gw_ticks)"; fi
  out="$(on "$side" pgbench -n "$@" 2>&1)" || {
    echo "$out" >&2
    if is_gateway "$side"; then gateway_log_tail; fi
    die "pgbench ($side $metric) failed"
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
  log "$(printf '  %-13s %-9s tps %9.1f  latency %7.3f ms  tx %7d%s' \
    "$side" "$metric" "$tps" "$lat" "$ntx" "$extra")"
}

# run_timed SIDE METRIC CMD...: records wall time of CMD run against SIDE, and for the gateway
# its CPU time over the run in seconds.
run_timed() {
  local side="$1" metric="$2"; shift 2
  local t0 t1 c0=0 c1=0 secs extra=""
  check_gateway_alive
  if is_gateway "$side"; then c0="$(gw_ticks)"; fi
  t0="$(now)"
  on "$side" "$@" >/dev/null || {
    if is_gateway "$side"; then gateway_log_tail; fi
    die "$metric ($side) failed"
  }
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
  log "$(printf '  %-13s %-9s %7.3f s  %7.1f MiB/s  %8.0f rows/s%s' \
    "$side" "$metric" "$secs" "$(calc "$RESULT_BYTES / 1048576 / $secs" .1f)" \
    "$(calc "$ROWS / $secs" .0f)" "$extra")"
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

log "preparing role and database tg_mask"
superuser_psql -v pw="$BENCH_PASSWORD" <<'SQL'
SELECT 'CREATE ROLE tg_mask LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tg_mask')
\gexec
ALTER ROLE tg_mask LOGIN PASSWORD :'pw';
SELECT 'CREATE DATABASE tg_mask OWNER tg_mask' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'tg_mask')
\gexec
SQL

have_data="$(on direct psql -X -A -t -c \
  "SELECT obj_description(to_regclass('public.pii'), 'pg_class')")"
if [ "$have_data" != "$DATA_VERSION" ]; then
  log "generating table pii ($ROWS rows)"
  on direct psql -X -q -v ON_ERROR_STOP=1 -v rows="$ROWS" -v version="$DATA_VERSION" <<'SQL'
SET client_min_messages = warning;
DROP TABLE IF EXISTS pii;
CREATE TABLE pii (
  id bigint PRIMARY KEY, name text, email text, phone text, ssn text, card text, iban text,
  address text, note1 text, note2 text, note3 text, note4 text, note5 text,
  amount numeric(12,2), status text, created_at timestamptz
);
-- A deterministic pseudo-random number in [0, 1000003) per row and salt.
CREATE FUNCTION pg_temp.h(g bigint, salt int) RETURNS bigint LANGUAGE sql IMMUTABLE
  AS $$ SELECT (hashint8extended(g, salt) & 4611686018427387903) % 1000003 $$;
-- Ordinary prose of 60-100 characters; about one note in five carries an email or a phone.
CREATE FUNCTION pg_temp.note(g bigint, k int, email text, phone text) RETURNS text
  LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN h % 5 = 0 THEN
    CASE (h / 5) % 4
      WHEN 0 THEN 'Prefers to be contacted by email at ' || email || ' rather than by phone.'
      WHEN 1 THEN 'Asked us to call back on ' || phone || ' between nine and five on weekdays.'
      WHEN 2 THEN 'Send copies of all invoices to the assistant at ops.desk' || g
                  || '@example.org as well.'
      ELSE 'Alternate number +1 650-555-' || lpad((h % 10000)::text, 4, '0')
           || ' can be used when the main line is busy.'
    END
  ELSE (ARRAY[
    'Customer called about the delayed shipment and asked for an updated delivery estimate.',
    'Renewal discussed; prefers annual billing and wants the invoice sent by post.',
    'Account reviewed during the quarterly audit, no issues found with recent activity.',
    'Requested a copy of the contract terms and clarification on the cancellation policy.',
    'Left a voicemail, will follow up next week regarding the outstanding balance.',
    'Upgraded to the premium plan after the trial period ended, no complaints so far.',
    'Reported a billing discrepancy on two items; a credit note was issued the same day.',
    'Visited the branch office to update the mailing address and the beneficiary details.'
  ])[1 + (h / 5) % 8]
  END
  FROM (SELECT pg_temp.h(g, 100 + k) AS h) s
$$;
INSERT INTO pii
SELECT g, first || ' ' || last, email, phone,
  (100 + pg_temp.h(g, 3) % 566) || '-' || lpad((1 + pg_temp.h(g, 4) % 99)::text, 2, '0')
    || '-' || lpad((1 + pg_temp.h(g, 5) % 9999)::text, 4, '0'),
  (ARRAY['4111 1111 1111 1111', '5555-5555-5555-4444', '378282246310005',
         '6011111111111117'])[1 + g % 4],
  (ARRAY['DE89370400440532013000', 'GB82WEST12345698765432',
         'FR1420041010050500013M02606', 'NL91ABNA0417164300'])[1 + g % 4],
  (1 + pg_temp.h(g, 6) % 9899) || ' '
    || (ARRAY['Market Street', 'Mission Street', 'Oak Avenue', 'Pine Street', 'Maple Drive',
              'Cedar Lane', 'Elm Street', 'Sunset Boulevard'])[1 + pg_temp.h(g, 7) % 8] || ', '
    || (ARRAY['San Francisco, CA 94103', 'Oakland, CA 94607', 'Portland, OR 97205',
              'Seattle, WA 98101', 'Austin, TX 78701', 'Denver, CO 80202'])[1 + pg_temp.h(g, 8) % 6],
  pg_temp.note(g, 1, email, phone), pg_temp.note(g, 2, email, phone),
  pg_temp.note(g, 3, email, phone), pg_temp.note(g, 4, email, phone),
  pg_temp.note(g, 5, email, phone),
  (pg_temp.h(g, 9) % 10000000) / 100.0,
  (ARRAY['active', 'pending', 'closed', 'suspended', 'active'])[1 + g % 5],
  timestamptz '2021-01-01 00:00:00+00' + g * interval '5 minutes'
    + pg_temp.h(g, 10) % 300 * interval '1 second'
FROM generate_series(1, :rows) g,
  LATERAL (SELECT
    (ARRAY['James', 'Mary', 'Robert', 'Patricia', 'John', 'Jennifer', 'Michael', 'Linda',
           'David', 'Elizabeth', 'William', 'Barbara', 'Richard', 'Susan', 'Joseph', 'Jessica',
           'Thomas', 'Sarah', 'Charles', 'Karen'])[1 + g % 20] AS first,
    (ARRAY['Smith', 'Johnson', 'Williams', 'Brown', 'Jones', 'Garcia', 'Miller', 'Davis',
           'Rodriguez', 'Martinez', 'Hernandez', 'Lopez', 'Gonzalez', 'Wilson', 'Anderson',
           'Taylor', 'Moore', 'Jackson', 'Martin', 'Lee'])[1 + pg_temp.h(g, 1) % 20] AS last) n,
  LATERAL (SELECT lower(first) || '.' || lower(last) || g || '@example.com' AS email,
    '+1 415-555-' || lpad((pg_temp.h(g, 2) % 10000)::text, 4, '0') AS phone) c;
COMMENT ON TABLE pii IS :'version';
VACUUM ANALYZE pii;
SQL
fi

have_scale=0
if [ "$(on direct psql -X -A -t -c "SELECT to_regclass('pgbench_branches') IS NOT NULL")" = t ]; then
  have_scale="$(on direct psql -X -A -t -c "SELECT count(*) FROM pgbench_branches")"
fi
if [ "$have_scale" != "$SCALE" ]; then
  log "initialising pgbench tables (scale $SCALE)"
  on direct pgbench -i -q -s "$SCALE" >/dev/null 2>"$TMP/pgbench-init.log" \
    || { cat "$TMP/pgbench-init.log" >&2; die "pgbench -i failed"; }
fi

echo "$SELECT_PAGE;" >"$TMP/page.sql"

cat >"$TMP/tollgate.toml" <<EOF
[policy]
default_rules = true

[listen]
api = "127.0.0.1:$TG_API_PORT"
postgres = "127.0.0.1:$TG_PG_PORT"

[[connections]]
name = "mask"
kind = "postgres"
url = "postgres://tg_mask@$PG_HOST:$PG_PORT/tg_mask?sslmode=disable"
password_env = "TG_MASK_PASSWORD"
groups = ["bench", "admin"]

[[connections]]
name = "plain"
kind = "postgres"
url = "postgres://tg_mask@$PG_HOST:$PG_PORT/tg_mask?sslmode=disable"
password_env = "TG_MASK_PASSWORD"
groups = ["bench", "admin"]
masking = false
EOF

log "starting the gateway"
TOLLGATE_ADMIN_KEY="$ADMIN_KEY" TG_MASK_PASSWORD="$BENCH_PASSWORD" \
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
for side in gateway-mask gateway-plain; do
  on "$side" psql -X -q -A -t -c "SELECT 1" >/dev/null \
    || { gateway_log_tail; die "cannot query through the gateway ($side)"; }
done
record rss_start gateway "$(calc "$(gw_mem_kib VmRSS) / 1024" .1f)"

# --- result check (also warms the caches) -----------------------------------------------------

log "checking results (one full read per side)"
# The row order of a sequential scan may differ between runs (synchronised scans), so the
# outputs are compared sorted; id is unique.
for side in "${SIDES[@]}"; do
  on "$side" psql -X -q -A -t -v ON_ERROR_STOP=1 -c "$SELECT_ALL" >"$TMP/$side.out" \
    || { if is_gateway "$side"; then gateway_log_tail; fi; die "$SELECT_ALL ($side) failed"; }
  sort -o "$TMP/$side.out" "$TMP/$side.out"
done
RESULT_BYTES="$(stat -c %s "$TMP/direct.out")"
PAGE_BYTES="$(on direct psql -X -q -A -t -v ON_ERROR_STOP=1 -c "$SELECT_PAGE" | wc -c)"
MASKED_BYTES="$(stat -c %s "$TMP/gateway-mask.out")"
[ "$(wc -l <"$TMP/direct.out")" -eq "$ROWS" ] || die "direct: expected $ROWS rows"
cmp -s "$TMP/direct.out" "$TMP/gateway-plain.out" || {
  diff "$TMP/direct.out" "$TMP/gateway-plain.out" | head -n 10 >&2
  die "gateway-plain (masking = false) does not return what direct returns"
}
[ "$(wc -l <"$TMP/gateway-mask.out")" -eq "$ROWS" ] \
  || die "gateway-mask returned $(wc -l <"$TMP/gateway-mask.out") rows, expected $ROWS"
for clear in '@example\.com' '4111 1111 1111 1111' 'DE89370400440532013000'; do
  n="$(grep -c -- "$clear" "$TMP/gateway-mask.out" || true)"
  [ "$n" -eq 0 ] || {
    grep -m 3 -- "$clear" "$TMP/gateway-mask.out" >&2
    die "gateway-mask: $n rows still hold /$clear/ in clear"
  }
done
log "  result $(calc "$RESULT_BYTES / 1048576" .1f) MiB direct ($ROWS rows)," \
  "$(calc "$MASKED_BYTES / 1048576" .1f) MiB masked; 1000-row page $(calc "$PAGE_BYTES / 1024" .0f) KiB"
log "  row 1 direct: $(on direct psql -X -A -t -c "SELECT email, phone, ssn, card, iban FROM pii WHERE id = 1")"
log "  row 1 masked: $(on gateway-mask psql -X -A -t -c "SELECT email, phone, ssn, card, iban FROM pii WHERE id = 1")"
rm -f "$TMP"/*.out

# --- rounds -----------------------------------------------------------------------------------

for round in $(seq 1 "$ROUNDS"); do
  order="$(sides "$round")"
  log "round $round/$ROUNDS (order: $order)"
  for side in $order; do
    run_timed "$side" select psql -X -q -A -t -o /dev/null -v ON_ERROR_STOP=1 -c "$SELECT_ALL"
  done
  for side in $order; do
    run_pgbench "$side" pages -f "$TMP/page.sql" -c "$CLIENTS" -j "$THREADS" -T "$DURATION"
  done
  for mode in simple prepared; do
    for side in $order; do
      run_pgbench "$side" "$mode" -S -M "$mode" -c "$CLIENTS" -j "$THREADS" -T "$DURATION"
    done
  done
done

check_gateway_alive
record rss_peak gateway "$(calc "$(gw_mem_kib VmHWM) / 1024" .1f)"
stop_gateway
if grep -qi "panic" "$TMP/gateway.log"; then
  log "warning: the gateway log mentions a panic:"
  grep -i -m 5 "panic" "$TMP/gateway.log" >&2 || true
fi

# --- summary ----------------------------------------------------------------------------------

python3 - "$RESULTS" "$CLIENTS" "$ROWS" "$RESULT_BYTES" "$MASKED_BYTES" "$PAGE_BYTES" <<'PY'
import sys
from collections import defaultdict
from statistics import median

vals = defaultdict(list)
for line in open(sys.argv[1]):
    metric, side, value = line.split()
    vals[(metric, side)].append(float(value))
clients = sys.argv[2]
rows = int(sys.argv[3])
result_bytes, masked_bytes, page_bytes = (int(a) for a in sys.argv[4:7])
n = (f"{rows // 1000000}M" if rows % 1000000 == 0
     else f"{rows // 1000}k" if rows % 1000 == 0 else str(rows))
result_kib, page_kib = result_bytes / 1024, page_bytes / 1024

def med(metric, side):
    return median(vals[(metric, side)])

def row(label, direct, mask, plain, ratio=""):
    print(f"{label:<34}{direct:<12}{mask:<14}{plain:<15}{ratio}".rstrip())

def met(value, target):
    return "met" if value >= target else "MISSED"

print()
print(f"target: {n}-row SELECT with masking ≥ 0.6 of direct")
print("target: pgbench -S masking on ≥ 0.95 of off")
row("metric", "direct", "gateway-mask", "gateway-plain", "ratios")

d, m, p = (med("select", s) for s in ("direct", "gateway-mask", "gateway-plain"))
row(f"{n}-row SELECT * (s)", f"{d:.3f}", f"{m:.3f}", f"{p:.3f}",
    f"mask {d / m:.2f} ({met(d / m, 0.6)}), plain {d / p:.2f} of direct")
mib = result_bytes / 1048576
row(f"{n}-row SELECT * (MiB/s)", f"{mib / d:.1f}", f"{mib / m:.1f}", f"{mib / p:.1f}")
cm, cp = med("cpu_select", "gateway-mask"), med("cpu_select", "gateway-plain")
row(f"gateway CPU, {n}-row SELECT (s)", "-", f"{cm:.2f}", f"{cp:.2f}",
    f"masking adds {(cm - cp) * 1e6 / result_kib:.1f} µs per KiB of result")

d, m, p = (med("tps_pages", s) for s in ("direct", "gateway-mask", "gateway-plain"))
row(f"1000-row pages c{clients} (tps)", f"{d:.1f}", f"{m:.1f}", f"{p:.1f}",
    f"mask {m / d:.2f}, plain {p / d:.2f} of direct; mask/plain {m / p:.2f}")
cm, cp = med("cpu_pages", "gateway-mask"), med("cpu_pages", "gateway-plain")
row("gateway CPU, pages (µs/tx)", "-", f"{cm:.0f}", f"{cp:.0f}",
    f"masking adds {(cm - cp) / page_kib:.1f} µs per KiB of result")

for mode in ("simple", "prepared"):
    d, m, p = (med(f"tps_{mode}", s) for s in ("direct", "gateway-mask", "gateway-plain"))
    row(f"pgbench -S {mode} c{clients} (tps)", f"{d:.0f}", f"{m:.0f}", f"{p:.0f}",
        f"mask/plain {m / p:.2f} ({met(m / p, 0.95)}); mask {m / d:.2f}, plain {p / d:.2f} of direct")
for mode in ("simple", "prepared"):
    cm, cp = med(f"cpu_{mode}", "gateway-mask"), med(f"cpu_{mode}", "gateway-plain")
    row(f"gateway CPU, -S {mode} (µs/tx)", "-", f"{cm:.1f}", f"{cp:.1f}",
        f"mask − plain {cm - cp:+.1f} µs/tx")

print(f"{'result size (MiB)':<34}direct {result_bytes / 1048576:.1f}, masked "
      f"{masked_bytes / 1048576:.1f}; 1000-row page {page_kib:.0f} KiB")
print(f"{'gateway RSS (MiB)':<34}start {med('rss_start', 'gateway'):.1f}, "
      f"peak {med('rss_peak', 'gateway'):.1f}")
PY
