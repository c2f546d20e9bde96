"""Hydra composition with structured configs.

Each stage's ``Config`` dataclass becomes a field of one root schema registered in Hydra's
ConfigStore, so an unknown key or a wrong type fails at composition, before any work, with
a message that names the key and the config file it came from.
"""
from __future__ import annotations

import dataclasses
import os
from functools import lru_cache
from pathlib import Path

from omegaconf import DictConfig

import importlib

from pipeline.stage import OTHER_CONFIG_GROUPS, STAGES, StageError

CONF_DIR = Path(os.environ.get("LMDAG_CONF", Path(__file__).resolve().parents[1] / "conf"))


@dataclasses.dataclass
class GlobalConfig:
    """Values shared by several stages; they reach a stage by interpolation (``${seed}``)."""

    seed: int = 1234
    results_dir: str = "results"


@lru_cache(maxsize=None)
def root_schema() -> type:
    fields = [(f.name, f.type, f) for f in dataclasses.fields(GlobalConfig)]
    for name, module in {**STAGES, **OTHER_CONFIG_GROUPS}.items():
        cls = importlib.import_module(module).Config
        fields.append((name, cls, dataclasses.field(default_factory=cls)))
    return dataclasses.make_dataclass("LmdagConfig", fields)


@lru_cache(maxsize=None)
def _register() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="lmdag_schema", node=root_schema())


def normalize_overrides(overrides: list[str], stage: str | None = None) -> list[str]:
    """Let ``python -m pipeline filter min_words=3`` mean ``filter.min_words=3``."""
    if stage is None:
        return list(overrides)
    top = {f.name for f in dataclasses.fields(root_schema())} | {"experiment"}
    out = []
    for o in overrides:
        head = o.lstrip("+~").split("=", 1)[0].split(".", 1)[0]
        out.append(o if head in top else f"{stage}.{o}")
    return out


def _valid_keys(full_key: str) -> list[str]:
    from omegaconf import OmegaConf

    node = OmegaConf.structured(root_schema())
    for part in full_key.split(".")[:-1]:
        node = node.get(part) if hasattr(node, "get") else None
        if node is None or not hasattr(node, "keys"):
            return []
    return [str(k) for k in node.keys()]


def _explain(err: Exception, overrides) -> str:
    """Hydra's message, minus its advice to append keys (the schema forbids that), plus the
    valid keys and the closest match for a misspelt one."""
    import difflib
    import re

    text = f"{err}\n{err.__cause__}" if err.__cause__ else str(err)
    text = "\n".join(line for line in text.splitlines() if not line.startswith("To append to your config"))
    hint = "See a stage's keys and defaults with `python -m pipeline <stage> --help`."
    m = re.search(r"full_key: (\S+)", text)
    if m and "not in" in text:
        valid = _valid_keys(m.group(1))
        close = difflib.get_close_matches(m.group(1).rsplit(".", 1)[-1], valid, n=1)
        hint = (f"Did you mean {close[0]!r}? " if close else "") + f"Valid keys here: {', '.join(valid)}."
    return f"config error (config dir {CONF_DIR}, overrides {list(overrides)}):\n{text}\n{hint}"


def compose(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose conf/config.yaml with Hydra overrides; raise StageError on any config mistake."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    _register()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            cfg = hydra_compose("config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        raise StageError(_explain(err, overrides)) from None
    try:
        # Resolve every interpolation now, so a bad ${...} names its key before work starts.
        from omegaconf import OmegaConf

        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as err:
        raise StageError(f"config error: {err}") from None
    return cfg
