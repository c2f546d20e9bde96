"""Training options on CPU: activation checkpointing changes nothing but memory; fp16 with loss
scaling and bf16 autocast train to finite losses close to fp32's; WSD is a valid schedule."""
import math

import pytest
import torch

from pipeline.core.train import metrics
from tests.pretrain.helpers import run_pretrain

pytestmark = pytest.mark.slow

KNOBS = ["train.steps=4", "train.warmup_steps=1", "train.log_every=1", "train.eval_every=4",
         "pretrain.final_eval_windows=8", "pretrain.sample_tokens=4"]


@pytest.fixture(scope="module")
def fp32(token_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("fp32") / "pretrain"
    run_pretrain(token_dir, out, *KNOBS)
    return [r["loss"] for r in metrics.read(out / "metrics.jsonl") if "loss" in r]


def _losses(token_dir, out, *extra):
    stats = run_pretrain(token_dir, out, *KNOBS, *extra)
    records = metrics.read(out / "metrics.jsonl")
    return stats, records, [r["loss"] for r in records if "loss" in r]


def test_activation_checkpointing_gives_the_same_losses(token_dir, tmp_path, fp32):
    _, _, losses = _losses(token_dir, tmp_path / "ac", "train.activation_checkpointing=true")
    assert losses == pytest.approx(fp32, rel=1e-6)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_low_precision_trains_close_to_fp32(token_dir, tmp_path, fp32, precision):
    stats, records, losses = _losses(token_dir, tmp_path / precision, f"train.precision={precision}")
    assert stats["precision"] == precision
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    assert losses == pytest.approx(fp32, abs=0.05)
    if precision == "fp16":  # dynamic loss scaling is on and logged
        assert all(r["loss_scale"] > 1 for r in records if "loss" in r)
    else:
        assert not any("loss_scale" in r for r in records)


def test_wsd_schedule_holds_then_decays(token_dir, tmp_path):
    _, records, _ = _losses(token_dir, tmp_path / "wsd", "train.schedule=wsd", "train.decay_frac=0.5",
                            "train.min_lr_ratio=0.0")
    lrs = [r["lr"] for r in records if "lr" in r]
    assert lrs == pytest.approx([3e-3, 3e-3, 1.5e-3, 0.0])


def test_mfu_needs_a_stated_peak_on_cpu():
    cpu = torch.device("cpu")
    assert metrics.peak_flops(cpu, 0.0, 2) == (0.0, "CPU: no stated peak (set train.peak_tflops for MFU)")
    assert metrics.mfu(1e6, 1000, 0.0) is None
    peak, source = metrics.peak_flops(cpu, 0.5, 2)
    assert peak == 5e11 and source == "train.peak_tflops (CPU, stated)"
    assert metrics.mfu(1e6, 1000, peak) == 1e9 / 5e11
