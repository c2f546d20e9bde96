"""Steps as values: a stage used at one place of the DAG, with its config, inputs and key.

A stage is a package ``pipeline/<stage>/`` whose ``__init__`` defines

    INPUTS   {role: Input(...)}: what it reads, by role ("docs", "tokens", "model" ...); the DAG
             (conf/dag/) wires each role to another step
    Config   a dataclass: the stage's settings; a field made with ``unkeyed(...)`` (workers,
             progress bars, log cadence) cannot change the result and stays out of the key
    VERSION  bump it when a change alters what the stage writes for the same config
    run(cfg, inputs, out, log) -> dict   reads ``inputs[role]`` (directories), writes into
             ``out``, returns the stats that become stats.json

A ``Step`` is that stage at one place: ``Step("evaluate_sft", "evaluate", config, {"model":
sft_step, "tokens": tokenize_step})``. Its key hashes the stage's name and VERSION, the keyed
part of its resolved config and its inputs' keys — so equal steps of different sweep points
share one directory, and a changed config or input gives a new one.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

KEYED = "lmdag_keyed"  # dataclass field metadata: False = not part of the step's key
KEY_LENGTH = 12


@dataclass(frozen=True)
class Input:
    """One input role of a stage: what the directory holds, and whether the DAG must wire it."""

    what: str
    optional: bool = False


def unkeyed(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING) -> Any:
    """A config field that cannot change the result (threads, progress, logging): it is left
    out of the step's key, so changing it never reruns the step."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={KEYED: False})


def keyed_values(value: Any) -> Any:
    """The part of a typed config that determines the result: every field but the unkeyed
    ones, nested dataclasses included, as plain JSON-able values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: keyed_values(getattr(value, f.name)) for f in dataclasses.fields(value)
                if f.metadata.get(KEYED, True)}
    if isinstance(value, dict):
        return {str(k): keyed_values(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [keyed_values(v) for v in value]
    return value


def typed_config(cls, config: dict):
    """The stage's Config dataclass from a resolved dict (nested dataclasses included);
    OmegaConf checks keys and types, ``__post_init__`` the values."""
    from omegaconf import OmegaConf

    if not dataclasses.is_dataclass(cls):
        return config
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), config))


def key_of(stage: str, version: str, typed: Any, input_keys: dict[str, str]) -> str:
    payload = {"stage": stage, "version": version, "config": keyed_values(typed),
               "inputs": dict(sorted(input_keys.items()))}
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:KEY_LENGTH]


@dataclass(frozen=True, eq=False)
class Step:
    """A stage at one place of the DAG. ``config`` is the resolved config (plain containers)."""

    name: str
    stage: str
    config: dict
    inputs: dict[str, "Step"] = field(default_factory=dict)

    @cached_property
    def module(self):
        from pipeline.stage import stage_module

        return stage_module(self.stage)

    @cached_property
    def typed(self):
        return typed_config(self.module.Config, self.config)

    @cached_property
    def key(self) -> str:
        return key_of(self.stage, self.module.VERSION, self.typed, {r: s.key for r, s in self.inputs.items()})

    def __repr__(self) -> str:
        ins = ", ".join(f"{r}={s.name}" for r, s in self.inputs.items())
        return f"Step({self.name}: {self.stage}({ins}) key={self.key})"
