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

import functools
import hashlib
import itertools
import json
import re
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


CONFIG_KEYS = ("experiment", "sweep", "overrides")  # what `snakemake --config` takes


def base_overrides(config: dict) -> list[str]:
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:  # a key Snakemake would carry silently, changing nothing
        raise StageError(f"snakemake --config takes {', '.join(CONFIG_KEYS)}; {', '.join(map(repr, unknown))} is none "
                         f"of them: a pipeline setting goes in overrides, e.g. --config "
                         f"\"overrides={unknown[0]}={config[unknown[0]]}\"")
    return ([f"experiment={config['experiment']}"] if config.get("experiment") else []) + _split(config.get("overrides"))


def _is_group(key: str) -> bool:
    """A Hydra config group (model, train, experiment, dag ...): choosing an option composes."""
    from pipeline.config import CONF_DIR

    return key == "experiment" or key.startswith("hydra") or (CONF_DIR / key.replace(".", "/")).is_dir()


_REF = re.compile(r"\$\{([A-Za-z_][\w.]*)\}")  # ${a.b.c}: a plain absolute reference


def _get(tree, path: str):
    for part in path.split("."):
        tree = tree[int(part)] if isinstance(tree, list) else tree[part]
    return tree


def _set(tree: dict, path: str, value) -> dict:
    """A copy of ``tree`` with ``path`` set, sharing every branch off the path."""
    head, _, rest = path.partition(".")
    out = dict(tree)
    out[head] = _set(tree[head], rest, value) if rest else value
    return out


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


class SweepBase:
    """A composed config, resolved once, that sweep points derive from as Hydra would compose
    them: a point's value overrides are applied (and type-checked against the schema) the way
    Hydra applies command-line values after composing, and only the interpolations that read
    an overridden key are resolved again. What it cannot follow exactly (a config group
    choice, +/~ edits, a dict value, an interpolation with a resolver) returns None, and the
    point is composed by Hydra."""

    def __init__(self, cfg):
        from omegaconf import OmegaConf

        self.cfg = cfg
        self.resolved = OmegaConf.to_container(cfg, resolve=True)
        self.interpolations = dict(self._walk(cfg, ""))
        self.simple = all(_REF.sub("", raw).find("${") < 0 for raw in self.interpolations.values())
        self._values: dict[tuple[str, str], tuple] = {}  # grids repeat each value over many points

    def _walk(self, node, prefix):
        from omegaconf import OmegaConf

        keys = range(len(node)) if OmegaConf.is_list(node) else node.keys()
        for k in keys:
            path = f"{prefix}.{k}" if prefix else str(k)
            if OmegaConf.is_interpolation(node, k):
                yield path, node._get_node(k)._value()
            else:
                child = node._get_node(k)
                if OmegaConf.is_dict(child) or OmegaConf.is_list(child):
                    yield from self._walk(child, path)

    def _checked_value(self, key: str, value):
        """``value`` as the schema stores it at ``key`` (OmegaConf's validation and conversion)."""
        import copy

        from omegaconf import OmegaConf

        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(self.cfg, parent) if parent else self.cfg
        if node is None or not OmegaConf.is_dict(node) or leaf not in node or OmegaConf.is_interpolation(node, leaf):
            return None, False
        if OmegaConf.is_config(node._get_node(leaf)):
            return None, False  # a whole group's value: Hydra merges it
        scratch = copy.deepcopy(node)
        scratch[leaf] = value
        return scratch[leaf], True

    def point(self, values: list[str]) -> dict | None:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        if not self.simple:
            return None
        try:
            parsed = OverridesParser.create().parse_overrides(values)
        except Exception:  # Hydra's own message, from compose
            return None
        tree, changed = self.resolved, []
        for o in parsed:
            key, value = o.key_or_group, o.value()
            if (o.is_delete() or o.is_add() or o.is_force_add() or o.package is not None or _is_group(key)
                    or isinstance(value, dict) or (isinstance(value, str) and "${" in value)
                    or any(_overlaps(key, ip) and key != ip for ip in self.interpolations)):
                return None
            memo = (key, repr(value))
            if memo not in self._values:
                try:
                    self._values[memo] = self._checked_value(key, value)
                except Exception:
                    return None
            value, ok = self._values[memo]
            if not ok:
                return None
            tree = _set(tree, key, value)
            changed.append(key)
        return self._reresolve(tree, changed)

    def _reresolve(self, tree: dict, changed: list[str]) -> dict:
        """Interpolations that read a changed key (directly or through another one), again."""
        import copy

        pending = dict(self.interpolations)
        while True:
            hit = [(ip, raw) for ip, raw in pending.items()
                   if any(_overlaps(ref, c) for ref in _REF.findall(raw) for c in changed)]
            if not hit:
                return tree
            for ip, raw in hit:
                whole = _REF.fullmatch(raw)
                value = (copy.deepcopy(_get(tree, whole.group(1))) if whole else
                         _REF.sub(lambda m: str(_get(tree, m.group(1))), raw))
                tree = _set(tree, ip, value)
                changed.append(ip)
                del pending[ip]


def build_plan(config: dict) -> list[Point]:
    _, sweep_base, grid = read_sweep(config.get("sweep"))
    common = sweep_base + base_overrides(config)
    base, points = None, []
    for values in expand_grid(grid):
        cfg = None
        if values:
            base = base or SweepBase(_composed(tuple(common)))
            cfg = base.point(values)
        if cfg is None:
            cfg = compose(common + values)
        points.append(Point(",".join(values) or "default", common + values, build_steps(cfg)))
    return points


@functools.lru_cache(maxsize=8)
def _composed(overrides: tuple[str, ...]):
    """compose(), once per override list: planning asks for the shared config three times."""
    return compose(list(overrides))


def _shared(config: dict):
    """The config without the grid: where results go and how the report looks."""
    _, sweep_base, _ = read_sweep(config.get("sweep"))
    return _composed(tuple(sweep_base + base_overrides(config)))


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


def until_targets(name: str, steps: dict[tuple[str, str], Step], results: Path) -> list[str] | None:
    """What ``--until NAME`` has to say to Snakemake, or None where NAME works as it is.

    Rules are stages, so Snakemake knows no rule `sft`: a step's name becomes its directories.
    And Snakemake starts nothing that reads a --until job, so --until on a stage whose steps
    read each other (finetune: sft -> dpo) would leave dpo waiting for sft forever ("Out of jobs
    ready to be started"): such a stage becomes the directories of its steps that no step of it reads.
    """
    from pipeline.core.plan import step_dir

    stage = [s for s in steps.values() if s.stage == name]
    if stage:
        read = {(i.name, i.key) for s in stage for i in s.inputs.values() if i.stage == name}
        chosen = [s for s in stage if (s.name, s.key) not in read] if read else []
    else:
        chosen = [s for (step_name, _), s in steps.items() if step_name == name]
    return [str(step_dir(results, s.name, s.key)) for s in chosen] or None


def rewrite_until(argv: list[str], steps: dict[tuple[str, str], Step], results: Path):
    """The ``--until`` names of a Snakemake command line that until_targets replaces, and the
    full list with them replaced -> (names, targets); None when every name works as it is."""
    names = []
    for i, word in enumerate(argv):
        if word.startswith("--until="):
            names.append(word.partition("=")[2])
        elif word == "--until":
            for w in argv[i + 1:]:
                if w.startswith("-"):
                    break
                names.append(w)
    replaced = {n: until_targets(n, steps, results) for n in names}
    if not any(replaced.values()):
        return None
    return [n for n in names if replaced[n]], [t for n in names for t in (replaced[n] or [n])]
