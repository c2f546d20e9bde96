"""The DAG declared in config (``dag:``, conf/dag/) as Step values.

Each entry names a step: the stage it runs (default: the entry's name), its inputs by role
(other steps), and ``config`` overrides on top of that stage's config group. Two ways to make
several steps from one entry:

    inputs: {model: [pretrain, sft, "compress_*"]}   a list fans out: one step per element,
                                                     named <entry>_<element>
    variants: {int8: {method: int8}, gptq4: {...}}   one step per named config, <entry>_<name>

Names in ``inputs`` may be globs over other steps' names (``compress_*``); a glob that matches
nothing makes no step, so a branch dropped by an experiment (``enabled: false``) takes its
dependents with it, while a plain name that does not exist is an error naming the entry.
"""
from __future__ import annotations

import itertools
from fnmatch import fnmatch
from typing import Any

from omegaconf import OmegaConf

from pipeline.core.errors import StageError
from pipeline.core.step import Step

GLOB_CHARS = "*?["


def _is_glob(ref: str) -> bool:
    return any(c in ref for c in GLOB_CHARS)


def _merge(*parts: dict) -> dict:
    return OmegaConf.to_container(OmegaConf.merge(*[OmegaConf.create(p) for p in parts]), resolve=True)


class _Entry:
    def __init__(self, name: str, spec: dict, group_configs: dict):
        from pipeline.stage import stage_module

        self.name, self.spec = name, spec
        self.stage = spec.get("stage") or name
        self.where = f"dag.{name}"
        try:
            self.module = stage_module(self.stage)
        except StageError as err:
            raise StageError(f"{self.where}.stage: {err}") from None
        self.base = group_configs.get(self.stage, {})
        roles = self.module.INPUTS
        given = spec.get("inputs") or {}
        unknown = sorted(set(given) - set(roles))
        if unknown:
            raise StageError(f"{self.where}.inputs: stage {self.stage!r} has no input {unknown}; "
                             f"its inputs are {sorted(roles) or 'none (a source stage)'}")
        missing = sorted(r for r, i in roles.items() if not i.optional and r not in given)
        if missing:
            raise StageError(f"{self.where}.inputs: stage {self.stage!r} needs {missing} "
                             f"({'; '.join(f'{r}: {roles[r].what}' for r in missing)})")
        self.inputs = {r: (list(v) if isinstance(v, (list, tuple)) else v) for r, v in given.items()}

    def refs(self) -> list[str]:
        return [ref for v in self.inputs.values() for ref in (v if isinstance(v, list) else [v])]

    def ready(self, built: dict[str, Step], waiting: list["_Entry"]) -> bool:
        """Plain names must be built already; a glob waits while an entry that could produce
        a matching name is still unexpanded."""
        for ref in self.refs():
            if not _is_glob(ref):
                if ref not in built:
                    return False
                continue
            prefix = ref.split("*")[0].split("?")[0].split("[")[0]
            if any(e is not self and (e.name.startswith(prefix) or prefix.startswith(e.name)) for e in waiting):
                return False
        return True

    def resolve(self, ref: str, built: dict[str, Step]) -> list[Step]:
        if _is_glob(ref):
            return [s for n, s in built.items() if fnmatch(n, ref)]
        return [built[ref]]

    def expand(self, built: dict[str, Step]) -> list[Step]:
        fixed, fanned = {}, {}
        for role, value in self.inputs.items():
            if isinstance(value, list):
                fanned[role] = [s for ref in value for s in self.resolve(ref, built)]
            elif _is_glob(value):
                raise StageError(f"{self.where}.inputs.{role}: a glob makes one step per match; write it as a list: [{value!r}]")
            else:
                fixed[role] = built[value]
        variants = self.spec.get("variants") or {None: {}}
        steps = []
        for (variant, overrides), combo in itertools.product(variants.items(), itertools.product(
                *[[(role, s) for s in fanned[role]] for role in fanned])):
            name = "_".join([self.name] + ([variant] if variant else []) + [s.name for _, s in combo])
            config, typed = self.config(overrides or {}, f"{self.where}.variants.{variant}" if variant else self.where)
            inputs = {**fixed, **dict(combo)}
            step = Step(name, self.stage, config, {r: inputs[r] for r in self.module.INPUTS if r in inputs})
            step.__dict__["typed"] = typed  # Step.typed's cache: checked already, no second conversion
            steps.append(step)
        return steps

    def config(self, overrides: dict, where: str) -> tuple[dict, Any]:
        return _checked(self.module, self.stage, [self.base, self.spec.get("config") or {}, overrides], where)


# Sweep points share most of their steps' configs: each (stage, layers) is merged and checked
# once per process (the typed config with it, which the step's key needs).
_CHECKED: dict[str, tuple[dict, Any]] = {}
_CHECKED_MAX = 20_000


def _checked(module, stage: str, layers: list[dict], where: str) -> tuple[dict, Any]:
    """(merged config, typed config) of ``checked_config``, remembered across sweep points."""
    import copy
    import json

    memo = json.dumps([stage, module.VERSION, layers], sort_keys=True, default=repr)
    if memo not in _CHECKED:
        if len(_CHECKED) >= _CHECKED_MAX:
            _CHECKED.clear()
        _CHECKED[memo] = _check(module, stage, layers, where)
    merged, typed = _CHECKED[memo]
    return copy.deepcopy(merged), typed


def checked_config(module, stage: str, layers: list[dict], where: str) -> dict:
    """Config layers merged in order (the stage's group, a DAG entry's `config`, a variant's
    overrides) and checked against the stage's schema now, before any work: an unknown key or
    a bad value names where it came from."""
    return _check(module, stage, layers, where)[0]


def _check(module, stage: str, layers: list[dict], where: str) -> tuple[dict, Any]:
    import dataclasses

    from omegaconf.errors import OmegaConfBaseException

    from pipeline.config import did_you_mean
    from pipeline.core.step import typed_config

    try:
        merged = _merge(*layers)
        typed = typed_config(module.Config, merged)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", "") or ""
        valid = [f.name for f in dataclasses.fields(module.Config)] if "." not in key else []
        hint = did_you_mean(key, valid) if valid and key and key not in valid else ""
        raise StageError(f"{where}: config of stage {stage!r}: {type(err).__name__}: "
                         f"{str(err).splitlines()[0]} (key {key!r}). {hint}".rstrip()) from None
    except StageError as err:
        raise StageError(f"{where}: {err}") from None
    return merged, typed


def build_steps(cfg) -> list[Step]:
    """Every enabled step of a composed config (or of the plain dict it resolves to), inputs
    before the steps that read them."""
    resolved = cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)
    dag = resolved.get("dag")
    if not dag:
        raise StageError("the config declares no steps (dag: is empty); see conf/dag/default.yaml")
    groups = {name: value for name, value in resolved.items() if name != "dag" and isinstance(value, dict)}
    disabled = {n for n, spec in dag.items() if not spec.get("enabled", True)}
    waiting = [_Entry(n, spec, groups) for n, spec in dag.items() if n not in disabled]
    built: dict[str, Step] = {}
    while waiting:  # the first entry whose inputs exist, each time: the declaration order where it can be
        entry = next((e for e in waiting if e.ready(built, waiting)), None)
        if entry is None:
            raise StageError(_unresolved(waiting, built, disabled))
        waiting.remove(entry)
        for step in entry.expand(built):
            if step.name in built:
                raise StageError(f"{entry.where}: makes a step named {step.name!r}, which another entry makes too")
            built[step.name] = step
    return list(built.values())


def _unresolved(waiting: list[_Entry], built: dict[str, Step], disabled: set[str]) -> str:
    lines = []
    for e in waiting:
        for ref in e.refs():
            if _is_glob(ref) or ref in built:
                continue
            if ref in disabled:
                lines.append(f"{e.where}.inputs: step {ref!r} is disabled (enabled: false); disable {e.name!r} too")
            elif ref not in {w.name for w in waiting}:
                lines.append(f"{e.where}.inputs: no step named {ref!r}; the steps are {sorted(built) or '-'}")
    return "\n".join(lines) or ("the DAG has a cycle among " + ", ".join(e.name for e in waiting))


def stage_config(cfg, stage: str) -> dict:
    """A stage's config outside the DAG (on a user's files): its group, plus the `config` of
    the DAG entry of the same name when there is one (pretrain's ${model} and ${train})."""
    from pipeline.stage import stage_module

    spec = OmegaConf.to_container(cfg.dag, resolve=True).get(stage) or {}
    # The schema gives every entry stage=None (the step's name): an entry named after the stage is its own.
    entry_config = spec.get("config") or {} if (spec.get("stage") or stage) == stage else {}
    group = OmegaConf.to_container(cfg[stage], resolve=True) if stage in cfg else {}
    return checked_config(stage_module(stage), stage, [group, entry_config], f"dag.{stage}")
