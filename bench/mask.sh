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

TG_PG_PORT="${TG_PG_PORT:-16433}"
TG_API_PORT="${TG_API_PORT:-18010}"
ROWS="${ROWS:-100000}"

BENCH_DB=tg_mask
# Side gateway-mask is the gateway's connection `mask`, gateway-plain its connection `plain`.
SIDES=(direct gateway-mask gateway-plain)
PGBENCH_FMT='  %-13s %-9s tps %9.1f  latency %7.3f ms  tx %7d%s'
TIMED_FMT='  %-13s %-9s %7.3f s  %7.1f MiB/s  %8.0f rows/s%s'
SELECT_ALL="SELECT * FROM pii"
SELECT_PAGE="SELECT * FROM pii LIMIT 1000"
# Bump when the generated data changes, so that an existing table is rebuilt.
DATA_VERSION="mask.sh data v1, $ROWS rows"

# shellcheck source=bench/lib.sh
source bench/lib.sh

# --- setup ------------------------------------------------------------------------------------

bench_setup

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

ensure_pgbench_tables

echo "$SELECT_PAGE;" >"$TMP/page.sql"

start_gateway $'[policy]\ndefault_rules = true' \
  "$(gateway_connection mask)" \
  "$(gateway_connection plain 'masking = false')"

# --- result check (also warms the caches) -----------------------------------------------------

log "checking results (one full read per side)"
# The row order of a sequential scan may differ between runs (synchronised scans), so the
# outputs are compared sorted; id is unique.
for side in "${SIDES[@]}"; do
  on "$side" psql -X -q -A -t -v ON_ERROR_STOP=1 -c "$SELECT_ALL" >"$TMP/$side.out" \
    || side_failed "$side" "$SELECT_ALL ($side) failed"
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

finish_gateway
if grep -qi "panic" "$TMP/gateway.log"; then
  log "warning: the gateway log mentions a panic:"
  grep -i -m 5 "panic" "$TMP/gateway.log" >&2 || true
fi

# --- summary ----------------------------------------------------------------------------------

summarise "$RESULT_BYTES" "$MASKED_BYTES" "$PAGE_BYTES" <<'PY'
result_bytes, masked_bytes, page_bytes = (int(a) for a in sys.argv[4:7])
n = (f"{rows // 1000000}M" if rows % 1000000 == 0
     else f"{rows // 1000}k" if rows % 1000 == 0 else str(rows))
result_kib, page_kib = result_bytes / 1024, page_bytes / 1024

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
