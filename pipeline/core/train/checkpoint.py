"""Resumable checkpoints, written atomically, in a directory that outlives a killed run.

    <ckpt_dir>/step-000200/model.safetensors   full (unsharded) fp32 weights
    <ckpt_dir>/step-000200/train_state.pt      optimizer, lr scheduler, loss scaler, step,
                                               data position, RNG states
    <ckpt_dir>/latest                          the name of the newest complete checkpoint
    <ckpt_dir>/metrics.jsonl                   the live log, cut back to the checkpoint on resume

A checkpoint is written into a temporary directory and renamed into place; ``latest`` is
replaced after that — a run killed at any moment leaves the previous checkpoint readable.
State dicts go through torch.distributed.checkpoint's helpers, so DDP, FSDP2 (sharded) and
single-process runs all save and load the same full, name-keyed state: a run can resume
with a different number of processes.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from pipeline.model.io import load_weights, save_weights
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

LATEST = "latest"
FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)
FULL_LOAD = StateDictOptions(full_state_dict=True)


def model_state(model) -> dict[str, torch.Tensor]:
    """Full fp32 weights keyed by the plain model's names (no DDP/compile/FSDP prefixes). A
    collective under FSDP: every rank must call it."""
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
    weights = model_state(model)
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


def latest(ckpt_dir: Path) -> Path | None:
    marker = ckpt_dir / LATEST
    if not marker.is_file():
        return None
    path = ckpt_dir / marker.read_text().strip()
    return path if (path / "train_state.pt").is_file() else None


def load(path: Path, model, optimizer, scheduler, scaler) -> dict:
    """Restore everything saved by ``save``; returns {"step", "samples"}. Every rank loads."""
    state = torch.load(path / "train_state.pt", map_location="cpu", weights_only=True)
    set_model_state_dict(model, load_weights(path / "model.safetensors"), options=FULL_LOAD)
    set_optimizer_state_dict(model, optimizer, state["optimizer"], options=FULL_LOAD)
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    _set_rng_state(state["rng"])
    return {"step": state["step"], "samples": state["samples"]}
