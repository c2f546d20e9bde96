"""Running a stage the three ways: from Snakemake (planned), on a user's files, from Python."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from pipeline.core import docs
from pipeline.config import compose
from pipeline.stage import (
    StageError,
    config_subtree,
    execute,
    is_complete,
    plan_keys,
    stage_dir,
    stage_module,
    typed_config,
)

PLAN_DIR = ".plan"


def overrides_file(results: Path, stage: str, key: str) -> Path:
    return Path(results) / PLAN_DIR / stage / f"{key}.json"


def planned_overrides(results: Path, stage: str, key: str) -> list[str]:
    """The overrides that produce ``key``, written when Snakemake planned the DAG."""
    path = overrides_file(results, stage, key)
    if not path.is_file():
        raise StageError(f"{stage}: no plan for key {key} at {path}; run the stage through snakemake")
    return json.loads(path.read_text())["overrides"]


def _compose_checked(stage: str, overrides: list[str], key: str | None):
    """(config, every stage key); refuses when ``key`` is given and the config composes to another.

    A mismatch means the plan and the stage disagree (the config or the stage's code changed
    between planning and running).
    """
    cfg = compose(overrides)
    keys = plan_keys(cfg)
    if key is not None and keys[stage] != key:
        raise StageError(
            f"{stage}: the config composes to key {keys[stage]}, but Snakemake asked for {key}. "
            f"The config or the stage's code changed since the DAG was planned: rerun snakemake."
        )
    return cfg, keys


def run_planned(stage: str, overrides: list[str], key: str | None = None) -> Path:
    """Compose the config, derive every key, run ``stage`` into results/<stage>/<key>/."""
    cfg, keys = _compose_checked(stage, overrides, key)
    results = Path(cfg.results_dir)
    inputs = {up: stage_dir(results, up, keys[up]) for up in stage_module(stage).INPUTS}
    # A stage split into scatter/gather steps (STEPS) reads its last step's output when
    # Snakemake ran the steps as rules; without it the stage runs every step itself.
    steps = list(getattr(stage_module(stage), "STEPS", {}))
    if steps:
        last = step_dirs(results, stage, keys[stage], steps)[steps[-1]]
        if is_complete(last):
            inputs[f"{stage}_{steps[-1]}"] = last
    out = stage_dir(results, stage, keys[stage])
    execute(stage, config_subtree(cfg, stage), inputs, out, keys[stage])
    return out


def step_dirs(results: Path, stage: str, key: str, steps) -> dict[str, Path]:
    """Where the steps of a split stage write: results/<stage>_<step>/<key>/ (the stage's key)."""
    return {s: stage_dir(results, f"{stage}_{s}", key) for s in steps}


def run_step_from_plan_file(stage: str, step: str, key: str, results: str = "results", args=()) -> None:
    """Snakemake's entry for one scatter/gather step of a stage that defines STEPS (dedup):
    ``python -m pipeline <stage> --planned KEY RESULTS --step NAME [ARGS ...]``."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg, keys = _compose_checked(stage, planned_overrides(Path(results), stage, key), key)
    module = stage_module(stage)
    steps = getattr(module, "STEPS", {})
    if step not in steps:
        raise StageError(f"{stage} has no step {step!r}; its steps are {list(steps) or 'none'}")
    results_dir = Path(cfg.results_dir)
    inputs = {up: stage_dir(results_dir, up, keys[up]) for up in module.INPUTS}
    for up, p in inputs.items():
        if not is_complete(p):
            raise StageError(f"{stage} {step}: input {up!r} at {p} is missing or unfinished")
    steps[step](typed_config(module.Config, config_subtree(cfg, stage)), inputs, step_dirs(results_dir, stage, key, steps),
                list(args), logging.getLogger(f"lmdag.{stage}.{step}"))


def run_from_plan_file(stage: str, key: str, results: str = "results") -> Path:
    """Snakemake's entry: the overrides that produce ``key`` were written at planning time."""
    return run_planned(stage, planned_overrides(Path(results), stage, key), key)


def _as_document_dir(in_path: str, tmp: Path, log_name: str) -> Path:
    """A user's input as a directory of document shards (a stage dir is used as it is)."""
    path = Path(in_path)
    if path.is_dir() and is_complete(path):
        return path
    if path.is_dir() and docs.shard_paths(path):
        target = tmp / "input"
        shutil.copytree(path, target)
        (target / "stats.json").write_text("{}")
        return target
    # Anything else is read by the collect stage's readers (jsonl, parquet, txt, warc, dirs).
    target = tmp / "input"
    stats = execute("collect", {"sources": [in_path]}, {}, target, key=log_name)
    if stats["dropped"]:
        print(f"reading {in_path}: set aside {stats['dropped']} (see the collect stage's reasons)")
    return target


def export_documents(stage_out: Path, out_file: Path) -> int:
    """Kept documents of a stage directory as one .jsonl or .parquet file."""
    rows = list(docs.iter_docs(stage_out))
    out_file.parent.mkdir(parents=True, exist_ok=True)
    if out_file.suffix == ".parquet":
        docs.write_table(out_file, rows)
    else:
        with open(out_file, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps({**r, "meta": json.loads(r["meta"])}, ensure_ascii=False) + "\n")
    return len(rows)


def run_on_files(stage: str, overrides: list[str], in_path: str | None, out_path: str) -> Path:
    """``python -m pipeline <stage> in=... out=...``: one stage on the user's own files.

    ``out`` is a directory (a full stage directory with stats.json) or, for document
    stages, a ``.jsonl``/``.parquet`` file of the kept documents.
    """
    cfg = compose(overrides)
    module = stage_module(stage)
    subtree = config_subtree(cfg, stage)
    out = Path(out_path)
    with tempfile.TemporaryDirectory(prefix=f"lmdag-{stage}-") as tmp_name:
        tmp = Path(tmp_name)
        inputs = {}
        if module.INPUTS:
            if in_path is None:
                raise StageError(f"{stage} reads {module.INPUTS}: give its input with in=PATH")
            if len(module.INPUTS) > 1:
                raise StageError(f"{stage} reads several stages {module.INPUTS}: run it through snakemake")
            inputs[module.INPUTS[0]] = _as_document_dir(in_path, tmp, f"{stage}-input")
        if out.suffix in (".jsonl", ".parquet"):
            execute(stage, subtree, inputs, tmp / "out")
            n = export_documents(tmp / "out", out)
            stats_path = out.with_name(out.name + ".stats.json")
            shutil.copy(tmp / "out" / "stats.json", stats_path)
            print(f"{stage}: wrote {n} documents to {out} (stats in {stats_path})")
        else:
            stats = execute(stage, subtree, inputs, out)
            print(f"{stage}: wrote {out} ({json.dumps({k: stats[k] for k in ('docs_in', 'docs_kept', 'dropped') if k in stats})})")
    return out
