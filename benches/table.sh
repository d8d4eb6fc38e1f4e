#!/bin/sh
# Issue #17's table in one command: every benchmark's interleaved rounds,
# run after run (run 1 of each bench, then run 2 of each, ... so that a
# drift of the machine touches them all), each output kept whole.
#
# Usage: benches/table.sh [runs]   (default 3; on a machine left quiet)
# With SAGA_PG_URL set (`export SAGA_PG_URL=$(scripts/pg.sh start)`) the
# PostgreSQL bench runs too. Outputs: $OUT, default target/table-<UTC>;
# each file starts with the CPU model and the load average, as the bench
# prints them. The figures of docs/PERFORMANCE.md's table are read there.
set -eu
cd "$(dirname "$0")/.."
runs=${1:-3}
out=${OUT:-target/table-$(date -u +%Y%m%dT%H%MZ)}
mkdir -p "$out"
echo "==> building the benchmarks (release)"
cargo bench --no-run --bench overhead --bench scaling --bench durable --bench memory 2>&1 | tail -n 1
if [ -n "${SAGA_PG_URL:-}" ]; then
    cargo bench --no-run --features postgres --bench postgres 2>&1 | tail -n 1
fi
git rev-parse --short HEAD >"$out/commit"
for i in $(seq "$runs"); do
    echo "==> run $i of $runs ($(date -u +%H:%M:%S) UTC, load $(cut -d' ' -f1-3 /proc/loadavg))"
    cargo bench -q --bench overhead -- --rounds 7 >"$out/overhead.$i.txt" 2>&1
    cargo bench -q --bench scaling >"$out/scaling.$i.txt" 2>&1
    cargo bench -q --bench durable -- zzz >"$out/durable.$i.txt" 2>&1
    if [ -n "${SAGA_PG_URL:-}" ]; then
        cargo bench -q --features postgres --bench postgres -- zzz >"$out/postgres.$i.txt" 2>&1
    fi
done
echo "==> memory"
cargo bench -q --bench memory >"$out/memory.txt" 2>&1
echo "==> done ($(date -u +%H:%M:%S) UTC): $out"
