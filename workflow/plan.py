"""Plan the DAG: compose the config of every sweep point and compute every stage key.

Snakemake's config (``--config``) carries three optional entries:

    experiment=ci                         a recipe from conf/experiment/
    overrides="filter.min_words=20 ..."   Hydra overrides applied to every point
    sweep=conf/sweep/NAME.yaml            a grid file, or the grid itself in Hydra's sweep
                                          grammar: sweep="filter.min_words=20,50 train.lr=1e-3,3e-4"

A point is one combination of sweep values. Points that agree on a stage's resolved
config (and its upstream) get the same key, so the stage is computed once and shared.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from pipeline.config import compose
from pipeline.runner import PLAN_DIR, overrides_file
from pipeline.stage import STAGES, StageError, plan_keys


REPO = Path(__file__).resolve().parents[1]


@dataclass
class Point:
    name: str
    overrides: list[str]
    keys: dict[str, str]


def _split(value) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return shlex.split(str(value))


def read_sweep(sweep) -> tuple[str, list[str], list[str]]:
    """(sweep name, base overrides, grid overrides) from a sweep file path or a grid string."""
    if not sweep:
        return "", [], []
    path = Path(str(sweep))
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file() and (REPO / path).is_file():  # relative to the repo, e.g. with -d
            path = REPO / path
        if not path.is_file():
            raise StageError(f"sweep file {path} does not exist (see conf/sweep/ for examples)")
        spec = yaml.safe_load(path.read_text()) or {}
        unknown = set(spec) - {"experiment", "overrides", "grid"}
        if unknown:
            raise StageError(f"{path}: unknown key(s) {sorted(unknown)}; a sweep file has experiment, overrides, grid")
        base = ([f"experiment={spec['experiment']}"] if spec.get("experiment") else []) + _split(spec.get("overrides"))
        grid = spec.get("grid") or {}
        if isinstance(grid, dict):
            grid = [f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in grid.items()]
        return path.stem, base, _split(grid)
    return "sweep", [], _split(sweep)


def expand_grid(grid: list[str]) -> list[list[str]]:
    """Hydra sweep grammar (``a=1,2 b=x,y``) -> the cartesian product of plain overrides."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(grid)
    axes = []
    for o in parsed:
        key = o.get_key_element()
        if o.is_sweep_override():
            axes.append([f"{key}={v}" for v in o.sweep_string_iterator()])
        else:
            axes.append([o.input_line])
    return [list(combo) for combo in itertools.product(*axes)] if axes else [[]]


def _point_name(grid_values: list[str]) -> str:
    return ",".join(grid_values) if grid_values else "default"


def build_plan(config: dict) -> list[Point]:
    experiment = config.get("experiment")
    base = ([f"experiment={experiment}"] if experiment else []) + _split(config.get("overrides"))
    _, sweep_base, grid = read_sweep(config.get("sweep"))
    points = []
    for values in expand_grid(grid):
        overrides = sweep_base + base + values
        cfg = compose(overrides)
        points.append(Point(_point_name(values), overrides, plan_keys(cfg)))
    return points


def results_dir(config: dict) -> Path:
    return Path(compose(_split(config.get("overrides")) + (
        [f"experiment={config['experiment']}"] if config.get("experiment") else [])).results_dir)


def _write_if_changed(path: Path, text: str) -> None:
    # Only rewrite on change: an unchanged file keeps its mtime, so nothing reruns for it.
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def write_plan(points: list[Point], results: Path) -> Path:
    """One overrides file per (stage, key), and the points manifest the report reads."""
    for p in points:
        for stage, key in p.keys.items():
            _write_if_changed(overrides_file(results, stage, key), json.dumps({"overrides": p.overrides}, indent=1))
    # Named by its content: plans of different sweeps never overwrite each other's manifest.
    text = json.dumps([asdict(p) for p in points], indent=1)
    manifest = results / PLAN_DIR / f"points-{hashlib.sha256(text.encode()).hexdigest()[:12]}.json"
    _write_if_changed(manifest, text)
    return manifest


def stage_names() -> list[str]:
    return list(STAGES)
