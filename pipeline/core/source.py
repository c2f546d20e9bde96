"""Which code made a result: a fingerprint of a stage's source, to point out stale results.

The fingerprint is the sha256 of every file the stage package imports, directly or not,
inside this repository (``pipeline/`` and ``kernels/``), found by reading the imports (no
code runs). stats.json keeps it; ``python -m pipeline status`` and every Snakemake run
compare it with the code as it is now and name the folders that changed. A stale result is
only pointed out, never recomputed by itself: the key (config + inputs + VERSION) decides
what reruns, and users rerun a stale step with ``-R``.
"""
from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOTS = ("pipeline", "kernels")
# The DAG machinery decides where and when a stage runs, not what it writes: left out, so an
# orchestration change does not mark every result stale.
MACHINERY = {"pipeline/__init__.py", "pipeline/__main__.py", "pipeline/config.py", "pipeline/runner.py",
             "pipeline/stage.py", "pipeline/core/step.py", "pipeline/core/publish.py", "pipeline/core/dag.py",
             "pipeline/core/plan.py", "pipeline/core/source.py"}


def _module_file(module: str) -> Path | None:
    parts = module.split(".")
    if parts[0] not in ROOTS:
        return None
    base = REPO.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[str]:
    """Modules named by the file's imports, `from a import b` counted as a and a.b."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    package = parts[:-1]  # what a relative import is relative to (kernels/ uses them)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            anchor = package[: len(package) - node.level + 1] if node.level else []
            base = ".".join(anchor + ([node.module] if node.module else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return found


@lru_cache(maxsize=None)
def closure(stage: str) -> tuple[str, ...]:
    """Repository files the stage package reaches through its imports (relative paths)."""
    todo = list((REPO / "pipeline" / stage).rglob("*.py"))
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen or str(path.relative_to(REPO)) in MACHINERY:
            continue
        seen.add(path)
        for module in _imports(path):
            target = _module_file(module)
            if target is not None and target not in seen:
                todo.append(target)
        for parent in path.relative_to(REPO).parents:  # importing a.b.c runs a and a.b too
            init = REPO / parent / "__init__.py"
            if parent.parts and init.is_file() and init not in seen:
                todo.append(init)
    return tuple(sorted(str(p.relative_to(REPO)) for p in seen))


@lru_cache(maxsize=None)
def fingerprint(stage: str) -> dict[str, str]:
    """{file: sha256 (first 16 hex digits)} of the stage's code closure."""
    return {f: hashlib.sha256((REPO / f).read_bytes()).hexdigest()[:16] for f in closure(stage)}


def changed_since(recorded: dict[str, str], stage: str) -> list[str]:
    """Folders whose files differ between a recorded fingerprint and the code now."""
    now = fingerprint(stage)
    files = {f for f in set(recorded) | set(now) if recorded.get(f) != now.get(f)}
    return sorted({str(Path(f).parent) for f in files})


def stale_parts(directory, stage: str) -> list[str]:
    """For a finished step directory: the folders whose code changed since it was made
    ([] when it is current, or when it records no fingerprint)."""
    import json

    stats_path = Path(directory) / "stats.json"
    if not stats_path.is_file():
        return []
    recorded = json.loads(stats_path.read_text()).get("source")
    return changed_since(recorded, stage) if recorded else []
