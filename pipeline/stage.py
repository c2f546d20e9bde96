"""Stages: finding them, and running one under the contract every stage keeps.

Every folder of ``pipeline/`` except the shared ones (core, model, report) is a stage
package (``pipeline/core/step.py`` says what it defines). ``execute`` wraps a stage's ``run``
with what every step must do: write into a temporary directory, save ``config.yaml``,
``stats.json`` and ``log.txt`` beside the data, check the document accounting, and rename the
directory into place only when everything succeeded — so an interrupted step never leaves a
directory that looks finished.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import logging
import time
from functools import lru_cache
from pathlib import Path
from types import ModuleType

from omegaconf import OmegaConf

from pipeline.core.errors import StageError, writes_to
from pipeline.core.publish import atomic_dir
from pipeline.core.step import typed_config

PACKAGE_DIR = Path(__file__).resolve().parent
SHARED_PACKAGES = ("core", "model", "report")
CONTRACT = ("Config", "INPUTS", "VERSION", "run")


@lru_cache(maxsize=None)
def stage_names() -> tuple[str, ...]:
    """Every stage package, in name order (the DAG, not this list, decides the order)."""
    return tuple(sorted(p.name for p in PACKAGE_DIR.iterdir()
                        if (p / "__init__.py").is_file() and p.name not in SHARED_PACKAGES))


def stage_module(name: str) -> ModuleType:
    if name not in stage_names():
        raise StageError(f"unknown stage {name!r}; the stages are: {', '.join(stage_names())}")
    module = importlib.import_module(f"pipeline.{name}")
    missing = [attr for attr in CONTRACT if not hasattr(module, attr)]
    if missing:
        raise StageError(f"pipeline/{name}/__init__.py is not a stage: it lacks {missing} (see pipeline/core/step.py)")
    return module


def check_accounting(name: str, stats: dict) -> None:
    """Every document that enters a data stage leaves it kept or dropped with a reason."""
    if "docs_in" not in stats:
        return
    dropped = sum(stats.get("dropped", {}).values())
    if stats["docs_in"] != stats["docs_kept"] + dropped:
        raise StageError(
            f"{name}: accounting broken: {stats['docs_in']} in != {stats['docs_kept']} kept "
            f"+ {dropped} dropped {stats.get('dropped')}"
        )


def check_chained(name: str, stats: dict, inputs: dict[str, Path]) -> None:
    """A data step reads every document its input step kept: its ``docs_in`` equals that
    step's ``docs_kept`` (when both were counted)."""
    source = inputs.get("docs")
    marker = Path(source) / "stats.json" if source is not None else None
    if "docs_in" not in stats or marker is None or not marker.is_file():
        return
    kept = json.loads(marker.read_text()).get("docs_kept")
    if kept is not None and kept != stats["docs_in"]:
        raise StageError(f"{name}: read {stats['docs_in']} documents, but its input {source} kept {kept}: "
                         f"documents were lost between the steps")


def _start_log(path: Path, name: str, extra_log: Path | None) -> tuple[logging.Logger, list[logging.Handler]]:
    log = logging.getLogger(f"lmdag.{name}")
    log.setLevel(logging.INFO)
    handlers: list[logging.Handler] = [logging.FileHandler(path / "log.txt")]
    if extra_log is not None:  # Snakemake's log: file of the rule
        extra_log.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(extra_log, mode="w"))
    for h in handlers:
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(h)
    return log, handlers


def execute(stage: str, config: dict, inputs: dict[str, Path], out: Path, key: str | None = None,
            step: str | None = None, input_refs: dict[str, str] | None = None,
            source: dict | None = None, extra_log: Path | None = None) -> dict:
    """Run ``stage`` with ``config`` on ``inputs`` ({role: directory}); publish ``out`` atomically.

    ``step``, ``input_refs`` ({role: "<step>/<key>"}) and ``source`` (the code fingerprint)
    are recorded in stats.json when the step runs as part of the DAG.
    """
    module = stage_module(stage)
    out = Path(out)
    for role, path in inputs.items():
        if not Path(path).exists():
            raise StageError(f"{step or stage}: input {role!r} at {path} does not exist")
    cfg = typed_config(module.Config, config)
    with writes_to(out, step or stage), atomic_dir(out) as tmp:
        log, handlers = _start_log(tmp, step or stage, extra_log)
        started = time.time()
        try:
            log.info("%s (stage %s) key=%s inputs=%s", step or stage, stage, key, {k: str(v) for k, v in inputs.items()})
            stats = module.run(cfg, {role: Path(p) for role, p in inputs.items()}, tmp, log) or {}
            stats = {"stage": stage, "step": step or stage, "key": key, "inputs": input_refs or {}, **stats}
            stats["wall_s"] = round(time.time() - started, 3)
            if stats.get("docs_in"):
                stats["docs_per_s"] = round(stats["docs_in"] / max(stats["wall_s"], 1e-9), 1)
            if source is not None:
                stats["source"] = source
            check_accounting(step or stage, stats)
            check_chained(step or stage, stats, inputs)
            (tmp / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
            log.info("done in %.1fs: %s", stats["wall_s"], json.dumps(stats, default=str)[:2000])
            # stats.json is the completion marker: written last, inside the temp dir.
            (tmp / "stats.json").write_text(json.dumps(stats, indent=2, default=str))
        except BaseException:
            log.exception("%s failed; its temporary directory %s is removed", step or stage, tmp)
            # Keep the log where the user can read it, next to (never inside) the step directory
            # (best effort: on a full disk the error itself must still reach the user).
            with contextlib.suppress(OSError):
                (out.parent / f"{out.name}.failed.log").write_text((tmp / "log.txt").read_text())
            raise
        finally:
            for h in handlers:
                h.close()
                log.removeHandler(h)
    return stats
