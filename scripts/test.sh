#!/usr/bin/env bash
# Runs the whole test suite. Starts what the tests need when it is not running:
# PostgreSQL on 127.0.0.1:5432 (the tests create their own roles, databases and a private
# cluster for password authentication), the PostgreSQL client tools (psql, pgbench), and Node.js
# with the packages of the OIDC provider that the identity tests start.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/tollgate-target}"

need_pkgs=()
command -v psql >/dev/null 2>&1 || need_pkgs+=(postgresql-client)
command -v pgbench >/dev/null 2>&1 || need_pkgs+=(postgresql-contrib)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_pkgs+=(postgresql)
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)
# The SSH tests start their own OpenSSH server and drive the real client, the token given by sshpass.
[ -x /usr/sbin/sshd ] || need_pkgs+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need_pkgs+=(openssh-client)
command -v sshpass >/dev/null 2>&1 || need_pkgs+=(sshpass)
# Exported terminal recordings are played with asciinema (`asciinema cat` under `script`).
command -v asciinema >/dev/null 2>&1 || need_pkgs+=(asciinema)
command -v script >/dev/null 2>&1 || need_pkgs+=(bsdutils)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "installing ${need_pkgs[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  for _ in $(seq 1 30); do
    pg_isready -h 127.0.0.1 -p 5432 -q && break
    sleep 1
  done
  pg_isready -h 127.0.0.1 -p 5432 || { echo "PostgreSQL did not start" >&2; exit 1; }
fi

command -v python3 >/dev/null 2>&1 || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 >/dev/null
}

# Node.js and npm for the local OIDC provider the tests start (scripts/oidc-provider), and its
# packages, installed again only when package-lock.json changes.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "installing nodejs npm"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
oidc_dir=scripts/oidc-provider
oidc_lock_sum="$(sha256sum "$oidc_dir/package-lock.json" | cut -d' ' -f1)"
if [ "$(cat "$oidc_dir/node_modules/.tollgate-lock-sha256" 2>/dev/null)" != "$oidc_lock_sum" ]; then
  echo "installing the OIDC test provider's npm packages"
  (cd "$oidc_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$oidc_lock_sum" >"$oidc_dir/node_modules/.tollgate-lock-sha256"
fi

cargo test --workspace --locked "$@"
# The independent audit-log verifier's own tests (standard-library Python).
python3 -m unittest scripts/test_verify_audit.py
