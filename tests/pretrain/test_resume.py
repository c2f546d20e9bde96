"""A run killed mid-way and restarted continues to the same losses, step for step."""
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from pipeline.core.train import metrics
from pipeline.core.train.checkpoint import load_weights
from pipeline.pretrain.loop import KILL_AFTER_STEP_ENV
from tests.pretrain.helpers import CI, run_pretrain

KNOBS = ["train.steps=12", "train.checkpoint_every=4", "train.eval_every=3", "train.log_every=1"]


def _cli(repo, token_dir, out, env_extra):
    cmd = [sys.executable, "-m", "pipeline", "pretrain", f"in={token_dir}", f"out={out}", *CI, *KNOBS]
    return subprocess.run(cmd, cwd=repo, env={**os.environ, **env_extra}, capture_output=True, text=True)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_losses(repo, token_dir, tmp_path):
    reference = tmp_path / "uninterrupted"
    run_pretrain(token_dir, reference, *KNOBS)

    out = tmp_path / "killed"
    killed = _cli(repo, token_dir, out, {KILL_AFTER_STEP_ENV: "7"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    ckpt = tmp_path / ".ckpt-killed"
    assert (ckpt / "latest").read_text() == "step-000004" and not out.exists()
    logged = [r["step"] for r in metrics.read(ckpt / "metrics.jsonl") if "loss" in r]
    assert logged == list(range(1, 8))  # it got past the checkpoint before dying

    resumed = _cli(repo, token_dir, out, {})
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((out / "stats.json").read_text())["resumed_from_step"] == 4
    strip = lambda rs: [(r["step"], r.get("loss"), r.get("val_loss"), r.get("lr"), r.get("grad_norm")) for r in rs]
    assert strip(metrics.read(out / "metrics.jsonl")) == strip(metrics.read(reference / "metrics.jsonl"))
    a, b = load_weights(out / "model.safetensors"), load_weights(reference / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not ckpt.exists()
