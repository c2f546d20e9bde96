"""Plan the DAG: compose every sweep point once, build its steps, write one plan file per step.

Snakemake's config (``--config``) carries three optional entries:

    experiment=ci                         a recipe from conf/experiment/
    overrides="filter.min_words=20 ..."   Hydra overrides applied to every point
    sweep=conf/sweep/NAME.yaml            a grid file, or the grid itself in Hydra's sweep
                                          grammar: sweep="filter.min_words=20,50 train.lr=1e-3,3e-4"

A point is one combination of sweep values. Points whose step has the same key share it:
one directory, one job.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipeline.config import compose
from pipeline.core.dag import build_steps
from pipeline.core.errors import StageError
from pipeline.core.plan import PLAN_DIR, write_plan
from pipeline.core.step import Step

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Point:
    name: str
    overrides: list[str]
    steps: list[Step] = field(default_factory=list)

    def manifest(self) -> dict:
        return {"name": self.name, "overrides": self.overrides,
                "steps": {s.name: {"stage": s.stage, "key": s.key,
                                   "inputs": {r: i.name for r, i in s.inputs.items()}} for s in self.steps}}


def _split(value) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    try:
        return shlex.split(str(value))
    except ValueError as err:  # an unclosed quote
        raise StageError(f"cannot split {value!r} into overrides: {err}; quote values with spaces "
                         f"as key='a b'") from None


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


def base_overrides(config: dict) -> list[str]:
    return ([f"experiment={config['experiment']}"] if config.get("experiment") else []) + _split(config.get("overrides"))


def build_plan(config: dict) -> list[Point]:
    _, sweep_base, grid = read_sweep(config.get("sweep"))
    points = []
    for values in expand_grid(grid):
        overrides = sweep_base + base_overrides(config) + values
        points.append(Point(",".join(values) or "default", overrides, build_steps(compose(overrides))))
    return points


def _shared(config: dict):
    """The config without the grid: where results go and how the report looks."""
    _, sweep_base, _ = read_sweep(config.get("sweep"))
    return compose(sweep_base + base_overrides(config))


def results_dir(config: dict) -> Path:
    return Path(_shared(config).results_dir)


def unique_steps(points: list[Point]) -> dict[tuple[str, str], Step]:
    """Every (step name, key) of the plan once, in DAG order."""
    found: dict[tuple[str, str], Step] = {}
    for p in points:
        for s in p.steps:
            found.setdefault((s.name, s.key), s)
    return found


def write_all(points: list[Point], config: dict) -> Path:
    """One plan file per step, and the manifest the report reads: the points and the report's
    config (named by its content, so plans of different sweeps never overwrite each other's)."""
    from omegaconf import OmegaConf

    shared = _shared(config)
    results = Path(shared.results_dir)
    for step in unique_steps(points).values():
        write_plan(step, results)
    text = json.dumps({"report": OmegaConf.to_container(shared.report, resolve=True),
                       "points": [p.manifest() for p in points]}, indent=1)
    manifest = results / PLAN_DIR / f"points-{hashlib.sha256(text.encode()).hexdigest()[:12]}.json"
    if not manifest.is_file():
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text(text)
    return manifest
