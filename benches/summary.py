#!/usr/bin/env python3
"""Per-step figures from the last `cargo bench --bench overhead` run.

Reads criterion's estimates (target/criterion/<group>/<bench>/new/) and
prints, for each saga, its time per step, the floor's time per step from
the same run, the engine's overhead per step (saga minus floor) and the
ratio saga / floor, as a markdown table for docs/PERFORMANCE.md.

Usage: python3 benches/summary.py [target-dir]
"""

import json
import os
import sys

STEPS = 10
CONCURRENT = 64
GROUPS = [
    ("sync_one", "sync, `run_blocking`, one at a time", 1),
    ("async_one", "async, `run`, current-thread runtime, one at a time", 1),
    ("async_concurrent64", "async, `run`, 64 tasks on a multi-thread runtime", CONCURRENT),
]
TARGETS = {"happy": 100.0, "fail": 200.0}


def estimate(root, group, bench):
    path = os.path.join(root, "criterion", group, bench, "new", "estimates.json")
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    # The mean, with its 95% confidence interval, in nanoseconds per iteration.
    mean = data["mean"]
    return mean["point_estimate"], mean["confidence_interval"]


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "target"
    print("| saga | path | per step | floor per step | overhead per step | ratio | targets |")
    print("|---|---|---|---|---|---|---|")
    missing = []
    for group, label, sagas in GROUPS:
        for path in ("happy", "fail"):
            floor = estimate(root, group, f"floor_{path}")
            if floor is None:
                missing.append(f"{group}/floor_{path}")
                continue
            floor_step = floor[0] / (sagas * STEPS)
            for how in ("builder", "macro"):
                engine = estimate(root, group, f"{how}_{path}")
                if engine is None:
                    missing.append(f"{group}/{how}_{path}")
                    continue
                step = engine[0] / (sagas * STEPS)
                low = engine[1]["lower_bound"] / (sagas * STEPS)
                high = engine[1]["upper_bound"] / (sagas * STEPS)
                overhead = step - floor_step
                ratio = step / floor_step
                limit = TARGETS[path]
                verdict = "overhead {} {:.0} ns, ratio {} 3".format(
                    "<=" if overhead <= limit else ">", limit, "<=" if ratio <= 3 else ">"
                )
                print(
                    f"| {how}, {label} | {path} | {step:.1f} ns ({low:.1f}-{high:.1f}) "
                    f"| {floor_step:.1f} ns | {overhead:.1f} ns | {ratio:.2f}x | {verdict} |"
                )
    if missing:
        print("\nmissing (run `cargo bench --bench overhead` first): " + ", ".join(missing))
        sys.exit(1)


if __name__ == "__main__":
    main()
