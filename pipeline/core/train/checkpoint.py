"""Resumable checkpoints, written atomically, in a directory that outlives a killed run.

    <ckpt_dir>/step-000200/model.safetensors   full (unsharded) fp32 weights
    <ckpt_dir>/step-000200/train_state.pt      optimizer, lr scheduler, loss scaler, step,
                                               data position, RNG states
    <ckpt_dir>/step-000200/checksums.json      size and sha256 of each file above
    <ckpt_dir>/latest                          the name of the newest complete checkpoint
    <ckpt_dir>/metrics.jsonl                   the live log, cut back to the checkpoint on resume

A checkpoint is written into a temporary directory and renamed into place; ``latest`` is
replaced after that — a run killed at any moment leaves the previous checkpoint readable.
A checkpoint damaged later (a truncated copy, a bad disk) fails its checksums: ``latest``
passes over it, saying why, to the newest one that is whole, and ``load`` refuses it.
State dicts go through torch.distributed.checkpoint's helpers, so DDP, FSDP2 (sharded) and
single-process runs all save and load the same full, name-keyed state: a run can resume
with a different number of processes.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from pipeline.core.errors import StageError
from pipeline.model.io import load_weights, save_weights
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

LATEST = "latest"
CHECKSUMS = "checksums.json"
FILES = ("model.safetensors", "train_state.pt")
FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)
FULL_LOAD = StateDictOptions(full_state_dict=True)


def model_state(model) -> dict[str, torch.Tensor]:
    """Full fp32 weights keyed by the plain model's names (no DDP/compile/FSDP prefixes). A
    collective under FSDP: every rank must call it. A pipeline stage gathers the others'
    parts on the pipeline's first rank (rank 0 among them)."""
    from pipeline.core.train import parallel

    if parallel.is_pipelined(model):
        return parallel.full_model_state(model)
    return get_model_state_dict(model, options=FULL)


def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "python_pos": random.getstate()[2],
             "numpy": torch.from_numpy(np_state[1].astype(np.int64)), "numpy_pos": int(np_state[2])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    random.setstate((3, tuple(s["python"]), s["python_pos"]))
    np.random.set_state(("MT19937", s["numpy"].numpy().astype(np.uint32), s["numpy_pos"], 0, 0.0))
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def save(ckpt_dir: Path, step: int, model, optimizer, scheduler, scaler, samples: int,
         keep: int, is_main: bool) -> Path | None:
    """Every rank calls this (gathering sharded state is collective); rank 0 writes."""
    from pipeline.core.train import parallel

    weights = model_state(model)
    if parallel.is_pipelined(model):
        optim_state = parallel.full_optimizer_state(model, optimizer)
    else:
        optim_state = get_optimizer_state_dict(model, optimizer, options=FULL)
    final = ckpt_dir / f"step-{step:06d}"
    if is_main:
        tmp = ckpt_dir / f".tmp-{final.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_weights(weights, tmp / "model.safetensors", {"step": step})
        torch.save({"step": step, "samples": samples, "optimizer": optim_state,
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                    "rng": _rng_state()}, tmp / "train_state.pt")
        (tmp / CHECKSUMS).write_text(json.dumps({name: _file_digest(tmp / name) for name in FILES}, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        latest_tmp = ckpt_dir / f".{LATEST}.tmp"
        latest_tmp.write_text(final.name)
        os.replace(latest_tmp, ckpt_dir / LATEST)
        for old in sorted(ckpt_dir.glob("step-*"))[:-max(keep, 1)]:
            shutil.rmtree(old, ignore_errors=True)
    if dist.is_initialized():
        dist.barrier()
    return final


def _file_digest(path: Path) -> dict:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return {"bytes": path.stat().st_size, "sha256": h.hexdigest()}


_WHOLE: set[tuple] = set()  # checkpoints this process has verified, by their files' size and mtime


def _signature(path: Path) -> tuple:
    stats = [(path / n).stat() for n in (*FILES, CHECKSUMS) if (path / n).is_file()]
    return (str(path), *((st.st_size, st.st_mtime_ns) for st in stats))


def damage(path: Path) -> str | None:
    """Why the checkpoint at ``path`` cannot be trusted, or None when every file matches its checksum."""
    if _signature(path) in _WHOLE:  # latest() checked it moments ago; load() need not read it twice
        return None
    try:
        expected = json.loads((path / CHECKSUMS).read_text())
    except (OSError, ValueError) as err:
        return f"{path / CHECKSUMS} is missing or unreadable ({type(err).__name__}); its files cannot be checked"
    for name in FILES:
        file, want = path / name, expected.get(name) or {}
        if not file.is_file():
            return f"{file} is missing"
        size = file.stat().st_size
        if size != want.get("bytes"):
            return f"{file} has {size} bytes, {want.get('bytes')} were written (truncated or replaced)"
        if _file_digest(file)["sha256"] != want.get("sha256"):
            return f"{file} does not match the sha256 written with it (corrupted)"
    _WHOLE.add(_signature(path))
    return None


def _step_of(path: Path) -> int:
    return int(path.name.split("-")[-1]) if path.name.split("-")[-1].isdigit() else -1


def latest(ckpt_dir: Path, log: logging.Logger | None = None) -> Path | None:
    """The newest whole checkpoint: the one ``latest`` names, else the newest older one that
    passes its checksums. A damaged one is passed over with a warning naming what is wrong."""
    log = log or logging.getLogger("lmdag.checkpoint")
    marker = ckpt_dir / LATEST
    named = ckpt_dir / marker.read_text().strip() if marker.is_file() else None
    if named is None or not named.is_dir() or _step_of(named) < 0:
        named = None  # no marker, or a damaged one: every checkpoint is a candidate
    newest = _step_of(named) if named is not None else float("inf")
    older = sorted((p for p in ckpt_dir.glob("step-*") if p != named and _step_of(p) <= newest), key=_step_of, reverse=True)
    refused = []
    for path in ([named] if named is not None else []) + older:
        why = damage(path)
        if why is None:
            if refused:
                log.warning("resuming from %s: %s", path.name, "; ".join(refused))
            return path
        refused.append(f"refused {path.name}: {why}")
        log.warning("checkpoint %s refused: %s", path, why)
    if refused:
        raise StageError(f"no whole checkpoint in {ckpt_dir}: " + "; ".join(refused)
                         + f". Delete {ckpt_dir} to train from the start.")
    return None


def load(path: Path, model, optimizer, scheduler, scaler) -> dict:
    """Restore everything saved by ``save``; returns {"step", "samples"}. Every rank loads.

    A checkpoint that fails its checksums is refused; its state is read as tensors only
    (``weights_only``): a file that holds other objects is refused, never run.
    """
    why = damage(path)
    if why is not None:
        raise StageError(f"checkpoint {path} refused: {why}")
    try:
        state = torch.load(path / "train_state.pt", map_location="cpu", weights_only=True)
    except Exception as err:  # weights_only raises UnpicklingError for any object it will not build
        raise StageError(f"checkpoint {path / 'train_state.pt'} refused: it holds more than tensors and "
                         f"plain values ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    from pipeline.core.train import parallel

    if parallel.is_pipelined(model):  # each stage takes its part
        parallel.load_full_state(model, optimizer, load_weights(path / "model.safetensors"), state["optimizer"])
    else:
        set_model_state_dict(model, load_weights(path / "model.safetensors"), options=FULL_LOAD)
        set_optimizer_state_dict(model, optimizer, state["optimizer"], options=FULL_LOAD)
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    _set_rng_state(state["rng"])
    return {"step": state["step"], "samples": state["samples"]}
