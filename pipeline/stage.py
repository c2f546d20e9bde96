"""The stage contract: registry, content-addressed keys, atomic stage directories.

A stage is a module in ``pipeline/`` that defines

    Config   a dataclass: the stage's config subtree (registered with Hydra, see config.py)
    INPUTS   names of the upstream stages it reads (their directories are passed to run)
    VERSION  a code version: bump it when a change alters the stage's output
    run(cfg, inputs, out, log) -> dict   does the work, writes into ``out``, returns stats

``execute`` wraps ``run`` with what every stage must do: write into a temporary directory,
save ``config.yaml``, ``stats.json`` and ``log.txt`` beside the data, check the document
accounting, and rename the directory into place only when everything succeeded — so an
interrupted stage never leaves a directory that looks finished.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from omegaconf import OmegaConf

from pipeline.core.errors import StageError

# Stage name -> module. The order is the DAG's order; later issues add lines here.
STAGES: dict[str, str] = {
    "collect": "pipeline.collect",
    "filter": "pipeline.filter",
    "dedup": "pipeline.dedup",
    "scrub": "pipeline.scrub",
    "tokenize": "pipeline.tokenize",
    "pretrain": "pipeline.pretrain",
    "evaluate": "pipeline.evaluate",
}

# Config groups that are not content-addressed stages (they still get a schema).
OTHER_CONFIG_GROUPS: dict[str, str] = {"report": "pipeline.report", "model": "pipeline.model", "train": "pipeline.core.train.config"}

# Knobs that never change a stage's result: they stay out of its key.
NOT_IN_KEY = {"workers", "progress", "log_every", "sample_size",
              # pretrain: threads, launch and bookkeeping (resume makes checkpoints result-neutral)
              "threads", "launcher", "rdzv_endpoint", "checkpoint_every", "keep_checkpoints",
              "tensorboard", "peak_tflops"}

KEY_LENGTH = 12


def stage_module(name: str) -> ModuleType:
    if name not in STAGES:
        raise StageError(f"unknown stage {name!r}; the stages are: {', '.join(STAGES)}")
    return importlib.import_module(STAGES[name])


def keyed_subtree(subtree: Any) -> Any:
    """The part of a resolved config subtree that determines the stage's result."""
    if isinstance(subtree, dict):
        return {k: keyed_subtree(v) for k, v in sorted(subtree.items()) if k not in NOT_IN_KEY}
    if isinstance(subtree, list):
        return [keyed_subtree(v) for v in subtree]
    return subtree


def stage_key(name: str, subtree: dict, upstream_keys: dict[str, str]) -> str:
    """Short sha256 of (resolved subtree without NOT_IN_KEY knobs, upstream keys, code version)."""
    payload = {
        "stage": name,
        "config": keyed_subtree(subtree),
        "upstream": dict(sorted(upstream_keys.items())),
        "version": stage_module(name).VERSION,
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:KEY_LENGTH]


def config_subtree(cfg, name: str) -> dict:
    """The resolved subtree of one stage as plain containers."""
    return OmegaConf.to_container(cfg[name], resolve=True)


def plan_keys(cfg) -> dict[str, str]:
    """Keys of every registered stage for one composed config, in DAG order."""
    keys: dict[str, str] = {}
    for name in STAGES:
        module = stage_module(name)
        keys[name] = stage_key(name, config_subtree(cfg, name), {u: keys[u] for u in module.INPUTS})
    return keys


def stage_dir(results: Path, name: str, key: str) -> Path:
    return Path(results) / name / key


def is_complete(path: Path) -> bool:
    return (Path(path) / "stats.json").is_file()


def _start_log(path: Path, name: str) -> tuple[logging.Logger, logging.Handler]:
    log = logging.getLogger(f"lmdag.{name}")
    log.setLevel(logging.INFO)
    handler = logging.FileHandler(path / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    return log, handler


def check_accounting(name: str, stats: dict) -> None:
    """Every document that enters a data stage leaves kept or dropped with a reason."""
    if "docs_in" not in stats:
        return
    dropped = sum(stats.get("dropped", {}).values())
    if stats["docs_in"] != stats["docs_kept"] + dropped:
        raise StageError(
            f"{name}: accounting broken: {stats['docs_in']} in != {stats['docs_kept']} kept "
            f"+ {dropped} dropped {stats.get('dropped')}"
        )


def typed_config(cls, subtree: dict):
    """The stage's Config dataclass from a resolved subtree, nested dataclasses included."""
    if not dataclasses.is_dataclass(cls):
        return subtree
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), subtree))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temp_dirs(out: Path) -> None:
    """Temp dirs of this stage key left by killed runs (their process is gone)."""
    for stale in out.parent.glob(f".tmp-{out.name}-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def execute(name: str, subtree: dict, inputs: dict[str, Path], out: Path, key: str | None = None) -> dict:
    """Run stage ``name`` with config ``subtree`` on ``inputs``; publish ``out`` atomically."""
    module = stage_module(name)
    out = Path(out)
    for up, path in inputs.items():
        if not is_complete(path):
            raise StageError(
                f"{name}: input {up!r} at {path} is missing or unfinished; "
                f"run `snakemake -c all --until {up}` (or the whole DAG) first"
            )
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_dirs(out)
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    cfg = typed_config(module.Config, subtree)
    log, handler = _start_log(tmp, name)
    started = time.time()
    try:
        log.info("stage %s key=%s inputs=%s", name, key, {k: str(v) for k, v in inputs.items()})
        stats = module.run(cfg, inputs, tmp, log) or {}
        stats = {"stage": name, "key": key, **stats}
        stats["wall_s"] = round(time.time() - started, 3)
        if stats.get("docs_in"):
            stats["docs_per_s"] = round(stats["docs_in"] / max(stats["wall_s"], 1e-9), 1)
        check_accounting(name, stats)
        (tmp / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(subtree)))
        log.info("done in %.1fs: %s", stats["wall_s"], json.dumps(stats, default=str)[:2000])
        # stats.json is the completion marker: written last, inside the temp dir.
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2, default=str))
    except BaseException:
        log.exception("stage %s failed; its temporary directory %s is removed", name, tmp)
        handler.close()
        log.removeHandler(handler)
        # Keep the log where the user can read it, next to (never inside) the stage directory.
        shutil.copy(tmp / "log.txt", out.parent / f"{out.name}.failed.log")
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    handler.close()
    log.removeHandler(handler)
    os.replace(tmp, out)
    return stats
