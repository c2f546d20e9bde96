"""What a stage declares beside its code: named inputs and which config fields are in its key.

A stage is a package ``pipeline/<stage>/`` whose ``__init__`` defines

    INPUTS   {role: Input(...)}: what it reads, by role ("docs", "tokens", "model" ...); the DAG
             (conf/dag/) wires each role to another step
    Config   a dataclass: the stage's settings; a field made with ``unkeyed(...)`` (workers,
             progress bars, log cadence) cannot change the result and stays out of the key
    VERSION  bump it when a change alters what the stage writes for the same config
    run(cfg, inputs, out, log) -> dict   reads ``inputs[role]`` (directories), writes into
             ``out``, returns the stats that become stats.json
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

KEYED = "lmdag_keyed"  # dataclass field metadata: False = not part of the step's key


@dataclass(frozen=True)
class Input:
    """One input role of a stage: what the directory holds, and whether the DAG must wire it."""

    what: str
    optional: bool = False


def unkeyed(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING) -> Any:
    """A config field that cannot change the result (threads, progress, logging): it is left
    out of the step's key, so changing it never reruns the step."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={KEYED: False})
