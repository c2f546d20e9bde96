"""Killed and resumed, the loss curve is the uninterrupted one: under 2-process DDP with gradient
accumulation (the no_sync path), resumed on a different number of processes (from DDP and from
FSDP2's sharded state), and compiled."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from pipeline.core.train import metrics
from pipeline.core.train.checkpoint import load_weights
from pipeline.core.train.loop import KILL_AFTER_STEP_ENV
from tests.pretrain.helpers import CI, run_pretrain

KNOBS = ["train.steps=8", "train.checkpoint_every=4", "train.eval_every=4", "train.log_every=1", "train.warmup_steps=2"]
DDP = ["train.nproc=2", "train.strategy=ddp", "train.batch_size=2", "train.grad_accum=2"]
ONE_PROCESS_SAME_BATCH = ["train.nproc=1", "train.batch_size=2", "train.grad_accum=4"]


def _cli(repo, token_dir, out, overrides, env_extra=None):
    cmd = [sys.executable, "-m", "pipeline", "pretrain", f"in={token_dir}", f"out={out}", *CI, *KNOBS, *overrides]
    return subprocess.run(cmd, cwd=repo, env={**os.environ, **(env_extra or {})}, capture_output=True, text=True)


def _killed_after_step_6(repo, token_dir, out, overrides):
    """A run killed between its step-4 and step-8 checkpoints; returns its checkpoint folder."""
    killed = _cli(repo, token_dir, out, overrides, {KILL_AFTER_STEP_ENV: "6"})
    assert killed.returncode != 0, killed.stderr[-2000:]
    ckpt = out.parent / f".ckpt-{out.name}"
    assert (ckpt / "latest").read_text() == "step-000004" and not out.exists()
    assert [r["step"] for r in metrics.read(ckpt / "metrics.jsonl") if "loss" in r] == list(range(1, 7))
    return ckpt


def _resume(repo, token_dir, out, overrides) -> dict:
    resumed = _cli(repo, token_dir, out, overrides)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["resumed_from_step"] == 4
    return stats


def _curve(out):
    return [(r["step"], r.get("loss"), r.get("val_loss"), r.get("lr"), r.get("grad_norm")) for r in metrics.read(out / "metrics.jsonl")]


def _assert_same_curve(a, b, exact: bool):
    ca, cb = _curve(a), _curve(b)
    assert [c[0] for c in ca] == [c[0] for c in cb]
    if exact:
        assert ca == cb
    else:  # a different process count sums the same gradients in another order
        for x, y in zip(ca, cb):
            assert [v is None for v in x] == [v is None for v in y], x[0]
            assert [v for v in x if v is not None] == pytest.approx([v for v in y if v is not None], rel=1e-5, abs=1e-6), x[0]
    wa, wb = load_weights(a / "model.safetensors"), load_weights(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    # Adam divides by sqrt(v): near-zero moments turn summation-order noise into ~1e-6 steps.
    close = torch.equal if exact else (lambda p, q: torch.allclose(p, q, rtol=1e-4, atol=1e-5))
    assert all(close(wa[k], wb[k]) for k in wa)


@pytest.mark.slow
def test_ddp_with_grad_accum_resumes_on_two_processes_and_on_one(repo, token_dir, tmp_path):
    reference = tmp_path / "uninterrupted"
    run_pretrain(token_dir, reference, *KNOBS, *DDP)

    ckpt = _killed_after_step_6(repo, token_dir, tmp_path / "killed", DDP)
    shutil.copytree(ckpt, tmp_path / ".ckpt-on_one")  # the same checkpoints, resumed on one process

    stats = _resume(repo, token_dir, tmp_path / "killed", DDP)
    assert stats["world_size"] == 2
    _assert_same_curve(tmp_path / "killed", reference, exact=True)

    stats = _resume(repo, token_dir, tmp_path / "on_one", ONE_PROCESS_SAME_BATCH)
    assert stats["world_size"] == 1
    _assert_same_curve(tmp_path / "on_one", reference, exact=False)


@pytest.mark.slow
def test_fsdp_sharded_run_resumes_on_one_process(repo, token_dir, tmp_path):
    reference = tmp_path / "uninterrupted"
    run_pretrain(token_dir, reference, *KNOBS, *ONE_PROCESS_SAME_BATCH)
    fsdp = [*DDP[:1], "train.strategy=fsdp", *DDP[2:]]
    _killed_after_step_6(repo, token_dir, tmp_path / "killed", fsdp)
    assert _resume(repo, token_dir, tmp_path / "killed", ONE_PROCESS_SAME_BATCH)["world_size"] == 1
    _assert_same_curve(tmp_path / "killed", reference, exact=False)


@pytest.mark.slow
def test_compiled_cpu_recipe_resumes_to_the_same_losses(repo, token_dir, tmp_path, monkeypatch):
    if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        pytest.skip("no C++ compiler: train.compile trains eagerly here, which the eager tests cover")
    inductor = tmp_path / "inductor"  # compiled code lands here: proof that the runs really compiled
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(inductor))
    compiled = ["train.compile=true"]
    reference = tmp_path / "uninterrupted"
    run_pretrain(token_dir, reference, *KNOBS, *compiled)
    assert any(inductor.rglob("*.py"))
    _killed_after_step_6(repo, token_dir, tmp_path / "killed", compiled)
    _resume(repo, token_dir, tmp_path / "killed", compiled)
    _assert_same_curve(tmp_path / "killed", reference, exact=True)
