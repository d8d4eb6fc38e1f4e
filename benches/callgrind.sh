#!/bin/sh
# Instructions per saga run, counted by callgrind: repeatable on a shared,
# noisy machine where times are not. Runs a case of benches/overhead.rs
# (see its `profile` function) 2000 and 4000 times and prints the
# difference divided by 2000, so set-up and start-up cancel out.
#
# Usage: benches/callgrind.sh <case>...   e.g. sync_builder_happy async_floor_fail
# Cases: {sync,async}_{floor,builder,macro}_{happy,fail}
# SAGA_BENCH_BIN=<path> counts a bench binary built before (a copy of an
# older build, for before -> after figures) instead of building one.
set -eu
cd "$(dirname "$0")/.."
bin=${SAGA_BENCH_BIN:-}
if [ -z "$bin" ]; then
    CARGO_PROFILE_BENCH_DEBUG=true cargo bench --bench overhead --no-run >/dev/null
    bin=$(CARGO_PROFILE_BENCH_DEBUG=true cargo bench --bench overhead --no-run --message-format=json 2>/dev/null |
        sed -n 's/.*"executable":"\([^"]*overhead[^"]*\)".*/\1/p' | tail -n 1)
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for case in "$@"; do
    for n in 2000 4000; do
        SAGA_PROFILE="$case:$n" valgrind --tool=callgrind --callgrind-out-file="$out/$case.$n" "$bin" 2>&1 |
            sed -n 's/.*refs: *\([0-9,]*\).*/\1/p' | tr -d , >"$out/$case.$n.ir"
    done
    echo "$case $((($(cat "$out/$case.4000.ir") - $(cat "$out/$case.2000.ir")) / 2000)) instructions per run"
done
