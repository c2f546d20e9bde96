"""``python -m pipeline dag`` and ``python -m pipeline status``: the planned DAG, and the
state of each step's result — done, missing, failed, or stale (made by code that changed
since; rerun it with ``snakemake -R <stage>``, nothing reruns by itself).

Arguments are Snakemake's ``--config`` entries (``experiment=ci``, ``sweep=FILE``) and Hydra
overrides for every point (``train.lr=1e-3``).
"""
from __future__ import annotations

from pathlib import Path

from pipeline.core.plan import step_dir
from pipeline.core.publish import is_complete
from pipeline.core.source import stale_parts


def _config(args: list[str]) -> dict:
    config, overrides = {}, []
    for a in args:
        head, _, value = a.partition("=")
        if head in ("experiment", "sweep"):
            config[head] = value
        else:
            overrides.append(a)
    return {**config, "overrides": overrides}


def state(results: Path, step) -> str:
    d = step_dir(results, step.name, step.key)
    if is_complete(d):
        changed = stale_parts(d, step.stage)
        return f"stale: {', '.join(changed)} changed since (snakemake -R {step.stage})" if changed else "done"
    if (d.parent / f"{d.name}.failed.log").is_file():
        return f"failed (see {d.parent / (d.name + '.failed.log')})"
    return "missing"


def main(command: str, args: list[str]) -> int:
    if "-h" in args or "--help" in args:
        print(__doc__.strip())
        return 0
    from workflow.plan import build_plan, results_dir, unique_steps

    config = _config(args)
    points = build_plan(config)
    results = results_dir(config)
    steps = list(unique_steps(points).values())
    width = max(len(s.name) for s in steps)
    for s in steps:
        ins = ", ".join(f"{r}={i.name}" for r, i in s.inputs.items())
        line = f"{s.name:<{width}}  {s.key}  {s.stage}({ins})"
        print(line if command == "dag" else f"{line}  {state(results, s)}")
    if len(points) > 1:
        print(f"{len(points)} points: " + "; ".join(p.name for p in points))
    return 0
