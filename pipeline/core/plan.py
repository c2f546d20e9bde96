"""Where every step writes, and the plan file each job runs from — decided here only.

    results/<step>/<key>/              a step's directory (config.yaml, stats.json, log.txt, data)
    results/<step>_<part>/<key>/       the parts of a step split into scatter/gather jobs (dedup)
    results/.plan/<step>/<key>.json    the plan: stage, resolved config, input directories, output
    results/.logs/<step>/<key>.log     the log of the job that ran it (Snakemake's `log:`)

The planner writes one plan per step; Snakemake passes it to the job as its input, and the
job runs from it alone — no Hydra composition, no key recomputation. A plan is named by the
step's key (which hashes its config, inputs and code version), so it is content-named; it is
rewritten only when its text changes, and keeps its modification time when only unkeyed
settings changed (workers, progress), so Snakemake reruns nothing for them.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from pipeline.core.errors import StageError
from pipeline.core.step import Step

PLAN_DIR, LOG_DIR = ".plan", ".logs"
PLAN_FIELDS = ("step", "stage", "key", "version", "config", "inputs", "results")


def step_dir(results, step: str, key: str, part: str | None = None) -> Path:
    return Path(results) / (f"{step}_{part}" if part else step) / key


def plan_file(results, step: str, key: str) -> Path:
    return Path(results) / PLAN_DIR / step / f"{key}.json"


def log_file(results, step: str, key: str) -> Path:
    return Path(results) / LOG_DIR / step / f"{key}.log"


def plan_of(step: Step, results) -> dict:
    return {
        "step": step.name, "stage": step.stage, "key": step.key, "version": step.module.VERSION,
        "config": step.config,
        "inputs": {role: {"step": s.name, "key": s.key, "dir": str(step_dir(results, s.name, s.key))}
                   for role, s in step.inputs.items()},
        "results": str(results),
    }


def write_plan(step: Step, results) -> Path:
    path = plan_file(results, step.name, step.key)
    text = json.dumps(plan_of(step, results), indent=1, sort_keys=True)
    if path.is_file():
        if path.read_text() == text:
            return path
        old = path.stat()
        path.write_text(text)  # same key: only unkeyed settings differ; keep the old time
        os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def read_plan(path) -> dict:
    path = Path(path)
    try:
        plan = json.loads(path.read_text())
    except FileNotFoundError:
        raise StageError(f"no plan file {path}: plan the DAG first (snakemake -n, or `python -m pipeline status`)") from None
    except json.JSONDecodeError as err:
        raise StageError(f"{path}: not a plan file ({err}); delete it and plan again") from None
    missing = [f for f in PLAN_FIELDS if f not in plan]
    if missing:
        raise StageError(f"{path}: plan file lacks {missing}; delete it and plan again")
    return plan
