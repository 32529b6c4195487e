#!/usr/bin/env bash
# Guardrail cost: classification plus rule evaluation per statement over the corpus
# (crates/tollgate-policy/tests/corpus.tsv), fresh and cached, in microseconds.
# For the throughput side (pgbench -S with the default pack on and off), run bench/pg.sh with
# POLICY=off and compare.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/tollgate-target}"
cargo run -q --release -p tollgate-policy --example bench_classify
