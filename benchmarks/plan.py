"""Planning at scale: composing the configs and keys of a 200-point sweep.

    python benchmarks/plan.py                  200 points; the naive way on the first 20
    python benchmarks/plan.py --naive-points 200

ours   workflow/plan.py:build_plan, what Snakemake runs at every start (and every cluster job
       runs again): the sweep's base config composed by Hydra once, each point's value
       overrides applied as Hydra applies them after composing, and a step config that
       several points share merged and checked once
naive  what composing each point with Hydra means: compose(base + point) and build its
       steps from scratch (the step-config memo emptied before every point)

Both end with every step's key. The naive way is timed on the first --naive-points points
(it takes seconds a point) and its total for the whole sweep projected from them; the keys it
finds for those points must equal ours.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# 5 x 8 x 5 = 200 points; filter changes the data steps, lr and warmup only the training ones
GRID = ("filter.gopher_quality.min_doc_words=40,50,60,70,80 "
        "train.lr=1e-3,2e-3,3e-3,4e-3,5e-3,6e-3,7e-3,8e-3 "
        "train.warmup_steps=2,3,4,5,6")


def keys_of(steps) -> list[tuple[str, str]]:
    return [(s.name, s.key) for s in steps]


def ours(config: dict):
    from workflow.plan import build_plan, unique_steps

    started = time.perf_counter()
    points = build_plan(config)
    for s in unique_steps(points).values():
        s.key
    return points, time.perf_counter() - started


def naive(config: dict, n: int):
    from pipeline.config import compose
    from pipeline.core import dag
    from workflow.plan import base_overrides, expand_grid

    started = time.perf_counter()
    found = []
    for values in expand_grid(config["sweep"].split())[:n]:
        dag._CHECKED.clear()
        steps = dag.build_steps(compose(base_overrides(config) + values))
        found.append(keys_of(steps))
    return found, time.perf_counter() - started


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default="ci")
    ap.add_argument("--naive-points", type=int, default=20)
    args = ap.parse_args(argv)
    config = {"experiment": args.experiment, "sweep": GRID}

    from pipeline.config import compose
    from workflow.plan import unique_steps

    compose([f"experiment={args.experiment}"])  # Hydra's and the stages' imports, outside both timings
    points, t_ours = ours(config)
    n_steps = sum(len(p.steps) for p in points)
    print(f"sweep: {GRID}  (experiment={args.experiment})")
    print(f"ours:  {len(points)} points, {n_steps} steps ({len(unique_steps(points))} unique) in {t_ours:.1f} s "
          f"= {len(points) / t_ours:.2f} points/s")
    n = min(args.naive_points, len(points))
    found, t_naive = naive(config, n)
    projected = t_naive / n * len(points)
    print(f"naive: {n} of {len(points)} points in {t_naive:.1f} s = {n / t_naive:.2f} points/s"
          f" -> {projected:.0f} s for all {len(points)}" + (" (projected)" if n < len(points) else ""))
    same = found == [keys_of(p.steps) for p in points[:n]]
    print(f"ratio: ours is {projected / t_ours:.1f}x faster; the {n} points' keys are the same: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
