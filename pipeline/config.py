"""Hydra composition with structured configs.

The root schema has one field per stage package (its ``Config`` dataclass: the one place a
default lives), the top-level ``model`` / ``train`` / ``report`` groups, the values steps
share (``seed``, ``results_dir``) and ``dag`` (conf/dag/: which steps run, their inputs and
per-step overrides). It is registered in Hydra's ConfigStore, so an unknown key or a wrong
type fails at composition, before any work, naming the key and the file it came from.
"""
# No `from __future__ import annotations`: make_dataclass copies field types, which must be real types.

import dataclasses
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Optional

from omegaconf import DictConfig

from pipeline.core.errors import StageError

CONF_DIR = Path(os.environ.get("LMDAG_CONF", Path(__file__).resolve().parents[1] / "conf"))

# Config groups that are not stages: name -> module whose `Config` is the group's schema.
GROUPS = {"model": "pipeline.model", "train": "pipeline.core.train.config", "report": "pipeline.report"}


@dataclasses.dataclass
class StepSpec:
    """One entry of the DAG (conf/dag/default.yaml explains the fields)."""

    stage: Optional[str] = None  # the stage package; default: the entry's name
    inputs: Dict[str, Any] = dataclasses.field(default_factory=dict)  # role -> step | [steps/globs]
    config: Dict[str, Any] = dataclasses.field(default_factory=dict)  # overrides of the stage's group
    variants: Dict[str, Any] = dataclasses.field(default_factory=dict)  # name -> overrides: a step each
    enabled: bool = True


@dataclasses.dataclass
class GlobalConfig:
    """Values shared by several steps; they reach a step by interpolation (``${seed}``)."""

    seed: int = 1234
    results_dir: str = "results"
    dag: Dict[str, StepSpec] = dataclasses.field(default_factory=dict)


@lru_cache(maxsize=None)
def root_schema() -> type:
    import importlib

    from pipeline.stage import stage_module, stage_names

    fields = [(f.name, f.type, f) for f in dataclasses.fields(GlobalConfig)]
    schemas = {name: stage_module(name).Config for name in stage_names()}
    schemas.update({name: importlib.import_module(module).Config for name, module in GROUPS.items()})
    for name, cls in schemas.items():
        fields.append((name, cls, dataclasses.field(default_factory=cls)))
    return dataclasses.make_dataclass("LmdagConfig", fields)


@lru_cache(maxsize=None)
def _register() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="lmdag_schema", node=root_schema())


def normalize_overrides(overrides: list[str], stage: Optional[str] = None) -> list[str]:
    """Let ``python -m pipeline filter min_words=3`` mean ``filter.min_words=3``, and
    ``python -m pipeline finetune train.steps=9`` mean the stage's own ``finetune.train.steps``
    (a root group of the same name is pretraining's: the override would change nothing here)."""
    if stage is None:
        return list(overrides)
    top = {f.name for f in dataclasses.fields(root_schema())} | {"experiment"}
    own = _own_groups(stage)
    out = []
    for o in overrides:
        head = o.lstrip("+~").split("=", 1)[0].split(".", 1)[0]
        out.append(o if head in top and head not in own else f"{stage}.{o}")
    return out


def _own_groups(stage: str) -> set:
    """The stage's config fields that share a root group's name (``train``, ``model``) but are
    not read from it: pretrain's DAG entry takes ``${model}`` and ``${train}``, finetune's
    ``train`` is its own."""
    import yaml

    from pipeline.stage import stage_module

    fields = {f.name for f in dataclasses.fields(stage_module(stage).Config)}
    entry = (yaml.safe_load((CONF_DIR / "dag" / "default.yaml").read_text()) or {}).get(stage) or {}
    from_root = {k for k, v in (entry.get("config") or {}).items() if v == "${%s}" % k}
    return fields - from_root


def valid_keys(full_key: str) -> list[str]:
    """The keys beside ``full_key``'s last part in the schema ([] when its parent is unknown)."""
    from omegaconf import OmegaConf

    node = OmegaConf.structured(root_schema())
    for part in full_key.split(".")[:-1]:
        node = node.get(part) if hasattr(node, "get") else None
        if node is None or not hasattr(node, "keys"):
            return []
    return [str(k) for k in node.keys()]


def did_you_mean(key: str, valid: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(key, valid, n=1)
    return (f"Did you mean {close[0]!r}? " if close else "") + f"Valid keys here: {', '.join(valid)}."


def _explain(err: Exception, overrides) -> str:
    """Hydra's message, minus its advice to append keys (the schema forbids that), plus the
    valid keys and the closest match for a misspelt one."""
    import re

    text = f"{err}\n{err.__cause__}" if err.__cause__ else str(err)
    text = "\n".join(line for line in text.splitlines() if not line.startswith("To append to your config"))
    hint = "See a stage's keys and defaults with `python -m pipeline <stage> --help`."
    m = re.search(r"full_key: (\S+)", text)
    if m and "not in" in text:
        hint = did_you_mean(m.group(1).rsplit(".", 1)[-1], valid_keys(m.group(1)))
    return f"config error (config dir {CONF_DIR}, overrides {list(overrides)}):\n{text}\n{hint}"


def compose(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose conf/config.yaml with Hydra overrides; raise StageError on any config mistake."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    _register()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            cfg = hydra_compose("config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        raise StageError(_explain(err, overrides)) from None
    try:
        # Resolve every interpolation now, so a bad ${...} names its key before work starts.
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as err:
        raise StageError(f"config error: {err}") from None
    return cfg
