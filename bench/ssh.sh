#!/usr/bin/env bash
# SSH benchmark: the gateway against a direct connection to the same sshd, side by side in one run.
#
# Starts its own sshd on a free port (own host key and user key, root login by key, UsePAM no)
# and a release-build gateway with one ssh connection `box` pinned to that host key, then
# measures, interleaving direct and gateway runs within each round (order alternates per round):
#   1. throughput: `ssh host 'head -c $BYTES /dev/zero' > /dev/null`, seconds and MiB/s; and
#      the same for TEXT_BYTES of `seq` output (short numeric lines: every byte goes through
#      the masking detectors, which binary zeros mostly skip);
#   2. keystroke echo latency in an interactive shell (`ssh -tt`): KEYS letters typed one at a
#      time by bench/ssh_keys.py (the same driver on both sides), p50 and p99;
#   3. the gateway's peak memory (VmHWM) and its CPU seconds per GiB relayed (utime+stime from
#      /proc/PID/stat over the throughput runs).
# Prints one line per run on stderr, then a summary table on stdout. Ratios are gateway/direct
# for throughput (1.0 = parity, higher is better); latencies show the time the gateway adds.
#
# Needs openssh-server (/usr/sbin/sshd, run as root), ssh, sshpass, numfmt and python3.
#
# Run:  bench/ssh.sh
#   ROUNDS=3           rounds; medians (throughput) and pooled percentiles (keystrokes)
#   BYTES=1G           bytes per throughput run (head -c syntax: 512M, 1G…)
#   TEXT_BYTES=256M    bytes per text throughput run (0: none)
#   KEYS=500           keystrokes per latency run
#   TG_API_PORT, TG_SSH_PORT, TG_PG_PORT, SSHD_PORT   ports (default: free ones)
#   TOLLGATE_BIN=path  use this binary instead of building one
#   CARGO_TARGET_DIR   build directory (default /var/tmp/tollgate-target)
set -euo pipefail
cd "$(dirname "$0")/.."

BYTES="${BYTES:-1G}"
TEXT_BYTES="${TEXT_BYTES:-256M}"
KEYS="${KEYS:-500}"
ROWS=0
SIDES=(direct gateway)

# shellcheck source=bench/lib.sh
source bench/lib.sh

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
TG_API_PORT="${TG_API_PORT:-$(free_port)}"
TG_SSH_PORT="${TG_SSH_PORT:-$(free_port)}"
TG_PG_PORT="${TG_PG_PORT:-$(free_port)}"
SSHD_PORT="${SSHD_PORT:-$(free_port)}"
SSHD_PID=""

# --- setup ------------------------------------------------------------------------------------

for tool in ssh ssh-keygen sshpass numfmt python3; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found on PATH"
done
[ -x /usr/sbin/sshd ] || die "/usr/sbin/sshd not found (openssh-server)"
NBYTES="$(numfmt --from=iec "$BYTES")" || die "BYTES: cannot read $BYTES"
NTEXT="$(numfmt --from=iec "$TEXT_BYTES")" || die "TEXT_BYTES: cannot read $TEXT_BYTES"

TMP="$(mktemp -d)"
ssh_cleanup() {
  stop_gateway
  if [ -n "$SSHD_PID" ]; then
    kill "$SSHD_PID" 2>/dev/null || true
    wait "$SSHD_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap ssh_cleanup EXIT
trap 'exit 130' INT TERM
RESULTS="$TMP/results"
: >"$RESULTS"
CLK_TCK="$(getconf CLK_TCK)"

if [ -n "${TOLLGATE_BIN:-}" ]; then
  BIN="$TOLLGATE_BIN"
else
  log "building tollgate (release)"
  cargo build --release --quiet -p tollgate
  BIN="$CARGO_TARGET_DIR/release/tollgate"
fi
[ -x "$BIN" ] || die "gateway binary not found: $BIN"

log "starting sshd on 127.0.0.1:$SSHD_PORT"
D="$TMP/sshd"
mkdir -p "$D" /run/sshd
ssh-keygen -q -t ed25519 -N "" -C tollgate-bench -f "$D/host_key"
ssh-keygen -q -t ed25519 -N "" -C tollgate-bench -f "$D/user_key"
cp "$D/user_key.pub" "$D/authorized_keys"
cat >"$D/sshd_config" <<EOF
Port $SSHD_PORT
ListenAddress 127.0.0.1
HostKey $D/host_key
PidFile $D/sshd.pid
AuthorizedKeysFile $D/authorized_keys
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
LogLevel ERROR
EOF
/usr/sbin/sshd -D -e -f "$D/sshd_config" </dev/null >/dev/null 2>"$D/sshd.log" &
SSHD_PID=$!
echo "[127.0.0.1]:$SSHD_PORT $(cut -d' ' -f1,2 "$D/host_key.pub")" >"$D/known_hosts"

SSH_OPTS=(-F /dev/null -o ConnectTimeout=10 -o LogLevel=ERROR)
# client SIDE [OPTION...]: sets CLIENT to the ssh command line for SIDE (the OPTIONs before the
# destination) and CLIENT_PASS to what sshpass answers. Both sides run under sshpass (only the
# gateway asks for a password), so the client is the same process tree on both.
client() {
  local side="$1"; shift
  case "$side" in
    direct)
      CLIENT_PASS=unused
      CLIENT=(ssh "${SSH_OPTS[@]}" -p "$SSHD_PORT" -i "$D/user_key" -o IdentitiesOnly=yes
        -o PreferredAuthentications=publickey -o UserKnownHostsFile="$D/known_hosts"
        -o StrictHostKeyChecking=yes "$@" root@127.0.0.1) ;;
    gateway)
      CLIENT_PASS="$TOKEN"
      CLIENT=(ssh "${SSH_OPTS[@]}" -p "$TG_SSH_PORT" -o PreferredAuthentications=password
        -o NumberOfPasswordPrompts=1 -o UserKnownHostsFile="$TMP/gateway_known_hosts"
        -o StrictHostKeyChecking=yes "$@" box@127.0.0.1) ;;
    *) die "unknown side $side" ;;
  esac
}
# on SIDE CMD: runs CMD on the target through SIDE.
on() {
  client "$1"
  SSHPASS="$CLIENT_PASS" sshpass -e "${CLIENT[@]}" "$2"
}
TOKEN=""

for _ in $(seq 1 100); do
  on direct true 2>/dev/null && break
  kill -0 "$SSHD_PID" 2>/dev/null || { cat "$D/sshd.log" >&2; die "sshd exited"; }
  sleep 0.1
done
on direct true || { cat "$D/sshd.log" >&2; die "cannot reach sshd directly"; }

log "starting the gateway"
cat >"$TMP/tollgate.toml" <<EOF
[listen]
api = "127.0.0.1:$TG_API_PORT"
postgres = "127.0.0.1:$TG_PG_PORT"
ssh = "127.0.0.1:$TG_SSH_PORT"

[[connections]]
name = "box"
kind = "ssh"
url = "ssh://root@127.0.0.1:$SSHD_PORT"
private_key_file = "$D/user_key"
host_key = "$(cut -d' ' -f1,2 "$D/host_key.pub")"
groups = ["ops"]
EOF
env TOLLGATE_ADMIN_KEY="$ADMIN_KEY" \
  "$BIN" up --config "$TMP/tollgate.toml" --data-dir "$TMP/data" >"$TMP/gateway.log" 2>&1 &
GW_PID=$!
for _ in $(seq 1 300); do
  kill -0 "$GW_PID" 2>/dev/null || break
  grep -qs "is up" "$TMP/gateway.log" && break
  sleep 0.1
done
grep -qs "is up" "$TMP/gateway.log" || { gateway_log_tail; die "the gateway did not come up"; }
echo "[127.0.0.1]:$TG_SSH_PORT $(cut -d' ' -f1,2 "$TMP/data/ssh_host_ed25519.pub")" \
  >"$TMP/gateway_known_hosts"
TOKEN="$(env TOLLGATE_URL="http://127.0.0.1:$TG_API_PORT" TOLLGATE_TOKEN="$ADMIN_KEY" \
  "$BIN" keys create --name bench --groups ops | tail -n 1)"

# Both sides return the same bytes before anything is timed.
for side in "${SIDES[@]}"; do
  got="$(on "$side" 'head -c 1048576 /dev/zero' | wc -c)" \
    || side_failed "$side" "the check run failed ($side)"
  [ "$got" = 1048576 ] || side_failed "$side" "$side returned $got bytes instead of 1048576"
done
record rss_start gateway "$(calc "$(gw_mem_kib VmRSS) / 1024" .1f)"

# --- rounds -----------------------------------------------------------------------------------

# throughput SIDE: one `head -c BYTES` run; for the gateway also its CPU time over the run.
throughput() {
  local side="$1" t0 t1 c0=0 c1=0 secs mibs extra=""
  check_gateway_alive
  if is_gateway "$side"; then c0="$(gw_ticks)"; fi
  t0="$(now)"
  on "$side" "head -c $NBYTES /dev/zero" >/dev/null || side_failed "$side" "throughput ($side) failed"
  t1="$(now)"
  if is_gateway "$side"; then c1="$(gw_ticks)"; fi
  secs="$(calc "$t1 - $t0" .3f)"
  mibs="$(calc "$NBYTES / 1048576 / $secs" .1f)"
  record secs "$side" "$secs"
  record mibs "$side" "$mibs"
  if is_gateway "$side"; then
    local cpu
    cpu="$(calc "($c1 - $c0) / $CLK_TCK / ($NBYTES / 1073741824)" .2f)"
    record cpu_per_gib gateway "$cpu"
    extra="  gateway CPU $cpu s/GiB"
  fi
  log "$(printf '  %-8s throughput %8.3f s  %8.1f MiB/s%s' "$side" "$secs" "$mibs" "$extra")"
}

# text SIDE: one run of TEXT_BYTES of `seq` output.
text_throughput() {
  local side="$1" t0 t1 secs mibs
  check_gateway_alive
  t0="$(now)"
  on "$side" "seq 1 2000000000 | head -c $NTEXT" >/dev/null \
    || side_failed "$side" "text throughput ($side) failed"
  t1="$(now)"
  secs="$(calc "$t1 - $t0" .3f)"
  mibs="$(calc "$NTEXT / 1048576 / $secs" .1f)"
  record text_mibs "$side" "$mibs"
  log "$(printf '  %-8s text       %8.3f s  %8.1f MiB/s' "$side" "$secs" "$mibs")"
}

# keystrokes SIDE ROUND: KEYS typed letters, each timed until echoed.
keystrokes() {
  local side="$1" round="$2" out p50 p99
  check_gateway_alive
  client "$side" -tt
  out="$(SSHPASS="$CLIENT_PASS" python3 bench/ssh_keys.py "$KEYS" "$TMP/keys-$side-$round" -- \
    sshpass -e "${CLIENT[@]}")" || side_failed "$side" "keystrokes ($side) failed"
  read -r p50 p99 <<<"$out"
  log "$(printf '  %-8s keystrokes p50 %7.0f µs  p99 %7.0f µs' "$side" "$p50" "$p99")"
}

for round in $(seq 1 "$ROUNDS"); do
  order="$(sides "$round")"
  log "round $round/$ROUNDS (order: $order)"
  for side in $order; do
    throughput "$side"
  done
  if [ "$NTEXT" -gt 0 ]; then
    for side in $order; do
      text_throughput "$side"
    done
  fi
  for side in $order; do
    keystrokes "$side" "$round"
  done
done

check_gateway_alive
record rss_peak gateway "$(calc "$(gw_mem_kib VmHWM) / 1024" .1f)"
stop_gateway

# --- summary ----------------------------------------------------------------------------------

cat "$TMP"/keys-direct-* >"$TMP/keys-direct"
cat "$TMP"/keys-gateway-* >"$TMP/keys-gateway"
summarise "$BYTES" "$TMP/keys-direct" "$TMP/keys-gateway" <<'PY'
size, keys_direct, keys_gateway = sys.argv[4:7]

def pct(path, p):
    xs = sorted(float(x) for x in open(path))
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))], len(xs)

def row(label, direct, gateway, ratio):
    print(f"{label:<34}{direct:<12}{gateway:<12}{ratio}")

print()
row("metric", "direct", "gateway", "ratio / added")
d, g = med("secs", "direct"), med("secs", "gateway")
row(f"head -c {size} (s)", f"{d:.3f}", f"{g:.3f}", f"{d / g:.2f}")
d, g = med("mibs", "direct"), med("mibs", "gateway")
row(f"head -c {size} (MiB/s)", f"{d:.1f}", f"{g:.1f}", f"{g / d:.2f}")
if vals[("text_mibs", "direct")]:
    d, g = med("text_mibs", "direct"), med("text_mibs", "gateway")
    row("seq output (MiB/s)", f"{d:.1f}", f"{g:.1f}", f"{g / d:.2f}")
for p in (50, 99):
    (d, n), (g, _) = pct(keys_direct, p), pct(keys_gateway, p)
    row(f"keystroke echo p{p} (µs, n={n})", f"{d:.0f}", f"{g:.0f}", f"{g - d:+.0f} µs")
print(f"{'gateway CPU per GiB relayed (s)':<34}{med('cpu_per_gib', 'gateway'):.2f}")
print(f"{'gateway RSS (MiB)':<34}start {med('rss_start', 'gateway'):.1f}, "
      f"peak {med('rss_peak', 'gateway'):.1f}")
PY
