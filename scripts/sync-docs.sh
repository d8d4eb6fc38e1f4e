#!/usr/bin/env bash
# Copies the guides (docs/DESIGN.md, docs/MACROS.md, docs/OPERATIONS.md)
# into the saga-core package, whose rustdoc includes them as the modules
# `saga_core::guide::{design, macros, operations}`: a published crate can
# only include files inside its own directory, so docs.rs needs the copies.
# docs/ stays the copy people edit; run this after editing a guide.
#
#   scripts/sync-docs.sh           copy
#   scripts/sync-docs.sh --check   fail (exit 1) if a copy differs (CI)
set -euo pipefail
cd "$(dirname "$0")/.."

guides=(DESIGN.md MACROS.md OPERATIONS.md)

case "${1:-}" in
"")
    mkdir -p saga-core/docs
    for guide in "${guides[@]}"; do
        cp "docs/$guide" "saga-core/docs/$guide"
    done
    ;;
--check)
    stale=0
    for guide in "${guides[@]}"; do
        if ! cmp -s "docs/$guide" "saga-core/docs/$guide"; then
            echo "saga-core/docs/$guide differs from docs/$guide: run scripts/sync-docs.sh" >&2
            stale=1
        fi
    done
    exit "$stale"
    ;;
*)
    echo "usage: scripts/sync-docs.sh [--check]" >&2
    exit 2
    ;;
esac
