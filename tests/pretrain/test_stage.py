"""pretrain as a stage: the published files, the stats, the key, the command line."""
import json
import subprocess
import sys

import pytest
import torch

from pipeline.config import compose
from pipeline.core.train import metrics
from pipeline.core.train.checkpoint import load_weights
from pipeline.core.errors import StageError
from pipeline.core.dag import build_steps
from tests.pretrain.helpers import pretrain_subtree, run_pretrain


@pytest.fixture(scope="module")
def trained(token_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("stage") / "pretrain"
    stats = run_pretrain(token_dir, out, "train.steps=40", "train.eval_every=20", "train.log_every=5")
    return out, stats


@pytest.mark.slow
def test_publishes_model_metrics_samples_and_hf_export(trained):
    out, stats = trained
    for name in ("model.safetensors", "model_config.json", "tokenizer.json", "metrics.jsonl", "samples.txt",
                 "train_state.pt", "stats.json", "config.yaml", "hf/config.json", "hf/model.safetensors"):
        assert (out / name).is_file(), name
    assert not list(out.parent.glob(".ckpt-*"))  # checkpoints are cleaned up after success
    from pipeline.model import Config, Transformer

    model = Transformer(Config(**json.loads((out / "model_config.json").read_text())))
    model.load_state_dict(load_weights(out / "model.safetensors"))
    assert stats["params"] == model.num_params()


@pytest.mark.slow
def test_learns_beyond_the_unigram_floor(trained):
    _, stats = trained
    records = metrics.read(trained[0] / "metrics.jsonl")
    losses = [r["loss"] for r in records if "loss" in r]
    assert [r["step"] for r in records if "loss" in r] == list(range(5, 41, 5))
    assert [r["step"] for r in records if "val_loss" in r] == [20, 40]
    assert losses[-1] < losses[0] - 1.0
    assert stats["val_bits_per_byte"] < 0.8 * stats["unigram_bits_per_byte"]
    assert stats["tokens"] == 40 * 8 * 64 and stats["steps"] == 40
    # no MFU on CPU without a stated peak (a measured one made it exceed 100%)
    assert stats["tokens_per_s"] > 0 and stats["mfu"] is None and "no stated peak" in stats["peak_flops_source"]
    assert len(stats["samples"]) == 5 and stats["samples"][0].startswith("The")
    assert (trained[0] / "samples.txt").read_text().count("--- sample") == 5


@pytest.mark.slow
def test_hf_export_loads_in_transformers_with_the_same_logits(trained):
    out, _ = trained
    from transformers import AutoModelForCausalLM

    from pipeline.model import Config, Transformer

    ours = Transformer(Config(**json.loads((out / "model_config.json").read_text())))
    ours.load_state_dict(load_weights(out / "model.safetensors"))
    theirs = AutoModelForCausalLM.from_pretrained(out / "hf").eval()
    x = torch.randint(0, 320, (1, 16))
    with torch.no_grad():
        assert torch.allclose(ours(x)[0], theirs(x).logits, atol=1e-4)


def plan_keys(cfg) -> dict[str, str]:
    return {s.name: s.key for s in build_steps(cfg)}


def test_key_follows_training_knobs_but_not_bookkeeping():
    base = plan_keys(compose(["experiment=ci"]))
    assert plan_keys(compose(["experiment=ci", "train.log_every=1", "train.threads=2",
                              "train.checkpoint_every=3", "train.progress=false"]))["pretrain"] == base["pretrain"]
    changed = plan_keys(compose(["experiment=ci", "train.lr=1e-3"]))
    assert changed["pretrain"] != base["pretrain"] and changed["tokenize"] == base["tokenize"]
    assert plan_keys(compose(["experiment=ci", "model.n_layer=3"]))["pretrain"] != base["pretrain"]


def test_subtree_carries_model_and_train():
    sub = pretrain_subtree("train.lr=0.01")
    assert sub["train"]["lr"] == 0.01 and sub["model"]["vocab_size"] == 320 and sub["seed"] == 1234


def test_config_errors_name_the_key(token_dir, tmp_path):
    with pytest.raises(StageError, match="train.precision must be one of"):
        run_pretrain(token_dir, tmp_path / "x", "train.precision=fp8")
    with pytest.raises(StageError, match="train.seq_len=128 exceeds model.max_seq_len=64"):
        run_pretrain(token_dir, tmp_path / "y", "train.seq_len=128")
    with pytest.raises(StageError, match="Did you mean 'lr'"):
        compose(["train.lrr=1"])


def test_help_shows_the_training_config(repo):
    out = subprocess.run([sys.executable, "-m", "pipeline", "pretrain", "--help"], cwd=repo,
                         capture_output=True, text=True, check=True).stdout
    assert "tokens: a tokenize directory" in out and "warmup_steps" in out and "n_layer" in out
