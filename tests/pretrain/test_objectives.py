"""train.objective reaches training: each option changes the loss from the first step, the prefix
the kernel sees is the objective's, corrupted batches give back the text, rows are a function
of (seed, sample) only, and what cannot be honoured is refused before any work."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import compose
from pipeline.core.dag import build_steps
from pipeline.core.errors import StageError
from pipeline.core.tokens import TokenData
from pipeline.core.train import metrics
from pipeline.core.train.batches import WindowSampler
from pipeline.core.train.config import Config as TrainConfig
from pipeline.core.train.objective_batches import ObjectiveBatches
from pipeline.model import Config, build
from tests.pretrain.helpers import run_pretrain

KNOBS = ["train.steps=2", "train.warmup_steps=1", "train.log_every=1", "train.eval_every=2",
         "pretrain.final_eval_windows=8", "pretrain.sample_tokens=4"]
PREFIX = ["model.attention=prefix"]
T5 = ["model.arch=encoder_decoder", "model.pos_emb=relative"]
SEQ = 64  # the ci model's max_seq_len


def objective(token_dir, encoder_decoder=False, **train) -> tuple[ObjectiveBatches, WindowSampler, TokenData]:
    data = TokenData(token_dir)
    sp = data.meta["special_tokens"]
    tc = TrainConfig(**train).validate()
    return (ObjectiveBatches(tc, SEQ, 1234, sp["sentinels"], sp["pad"], encoder_decoder),
            WindowSampler(data.train, SEQ, 1234), data)


def model(**kw):
    torch.manual_seed(0)
    return build(Config(vocab_size=320, n_layer=2, n_head=4, n_kv_head=2, d_model=64, d_mlp=128, max_seq_len=SEQ, **kw))


@pytest.fixture(scope="module")
def first_losses(token_dir, tmp_path_factory):
    runs = {"causal lm": [], "causal prefix_lm": ["train.objective=prefix_lm"],
            "prefix prefix_lm": [*PREFIX, "train.objective=prefix_lm"],
            "causal span_corruption": ["train.objective=span_corruption"],
            "prefix span_corruption": [*PREFIX, "train.objective=span_corruption"],
            "prefix ul2": [*PREFIX, "train.objective=ul2"],
            "encoder_decoder span_corruption": [*T5, "train.objective=span_corruption"]}
    out = {}
    for name, overrides in runs.items():
        d = tmp_path_factory.mktemp(name.replace(" ", "_")) / "pretrain"
        stats = run_pretrain(token_dir, d, *KNOBS, *overrides)
        out[name] = (metrics.read(d / "metrics.jsonl")[0]["loss"], stats)
    return out


def test_attention_and_objective_each_change_the_loss_from_the_first_step(first_losses):
    first = {name: loss for name, (loss, _) in first_losses.items()}
    assert len(set(first.values())) == len(first), first  # every pair differs
    for name, (_, stats) in first_losses.items():
        arch_attention, objective = name.rsplit(" ", 1)
        assert stats["objective"] == objective and arch_attention in (stats["attention"], stats["arch"])


def test_validation_scores_only_the_text_each_objective_predicts(first_losses):
    scored = {name: stats["val_tokens_scored"] for name, (_, stats) in first_losses.items()}
    assert scored["causal lm"] == 8 * SEQ  # every next token of 8 windows
    assert scored["causal prefix_lm"] == scored["prefix prefix_lm"] < 8 * SEQ  # the same suffixes
    spans = scored["causal span_corruption"]
    assert spans == scored["prefix span_corruption"] == scored["encoder_decoder span_corruption"] < 0.4 * 8 * SEQ
    for _, stats in first_losses.values():
        assert 0 < stats["val_bytes_scored"] and stats["val_bits_per_byte"] > 0 and stats["unigram_bits_per_byte"] > 0


@pytest.mark.parametrize("kind", ["prefix_lm", "ul2"])
def test_the_attention_kernel_gets_each_rows_prefix_length(token_dir, monkeypatch, kind):
    import kernels

    batches, sampler, _ = objective(token_dir, objective=kind)
    batch = batches.train_batch(sampler, 0, 8)
    seen = []
    real = kernels.attention

    def recording(q, k, v, causal=True, prefix_len=None, scale=None):
        seen.append(prefix_len)
        return real(q, k, v, causal, prefix_len, scale)

    monkeypatch.setattr(kernels, "attention", recording)
    batches.loss(prefix_attention=True)(model(attention="prefix"), batch)
    assert len(seen) == 2 and all(torch.equal(p, batch["prefix_len"]) for p in seen)  # every layer
    assert len(set(batch["prefix_len"].tolist())) > 1  # drawn per row
    seen.clear()
    batches.loss(prefix_attention=False)(model(), batch)
    assert seen == [None, None]  # a causal decoder reads the same rows causally


TRITON_CHECK = r"""
import json, os, sys, torch
os.environ["TRITON_INTERPRET"] = "1"
import kernels
from kernels import flash_attention
from pipeline.model import Config, build
batch = {k: torch.tensor(v) for k, v in json.loads(sys.argv[1]).items()}
seen = []
real = flash_attention.FlashAttention.apply
flash_attention.FlashAttention.apply = lambda q, k, v, causal, prefix, scale: seen.append(prefix) or real(q, k, v, causal, prefix, scale)
losses = []
for backend in ("triton", "torch"):
    torch.manual_seed(0)
    m = build(Config(vocab_size=320, n_layer=1, n_head=2, n_kv_head=1, d_model=32, d_mlp=64, max_seq_len=32,
                     attention="prefix", kernels=backend))
    losses.append(float(m(batch["idx"], batch["targets"], prefix_len=batch["prefix_len"])[1]))
print(json.dumps({"prefix": seen[0].tolist(), "dtype": str(seen[0].dtype), "losses": losses}))
"""


def test_the_triton_kernel_masks_with_the_objectives_prefixes(token_dir):
    data = TokenData(token_dir)
    sp = data.meta["special_tokens"]
    batches = ObjectiveBatches(TrainConfig(objective="prefix_lm"), 32, 7, sp["sentinels"], sp["pad"], False)
    batch = batches.train_batch(WindowSampler(data.train, 32, 7), 0, 3)
    payload = json.dumps({k: v.tolist() for k, v in batch.items()})
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run([sys.executable, "-c", TRITON_CHECK, payload], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["prefix"] == batch["prefix_len"].tolist() and got["dtype"] == "torch.int32"
    assert got["losses"][0] == pytest.approx(got["losses"][1], abs=1e-4)


def uncorrupt(source: list[int], target: list[int], sentinels: set[int]) -> list[int]:
    spans, current = {}, None
    for t in target:
        if t in sentinels:
            current = spans.setdefault(t, [])
        else:
            current.append(t)
    return [x for t in source for x in (spans[t] if t in sentinels else [t])]


@pytest.mark.parametrize("encoder_decoder", [False, True], ids=["decoder", "encoder_decoder"])
def test_span_corrupted_batches_give_back_the_original_text(token_dir, encoder_decoder):
    from tokenizers import Tokenizer

    batches, sampler, data = objective(token_dir, encoder_decoder, objective="span_corruption")
    tok = Tokenizer.from_file(str(token_dir / "tokenizer.json"))
    sentinels = set(data.meta["special_tokens"]["sentinels"])
    batch = batches.train_batch(sampler, 5, 4)
    for row, start in enumerate(sampler.window_starts(5, 4)):
        if encoder_decoder:
            source = batch["enc"][row][batch["enc_mask"][row]].tolist()
            target = batch["targets"][row][batch["targets"][row] != -100].tolist()
        else:
            p = int(batch["prefix_len"][row])
            target = batch["targets"][row][batch["targets"][row] != -100].tolist()
            source = batch["idx"][row][:p].tolist()
            assert batch["idx"][row][p:p + len(target) - 1].tolist() == target[:-1]  # teacher forcing
        original = uncorrupt(source, target, sentinels)
        window = sampler.tokens[start:start + len(original)].tolist()
        assert original == window and len(original) > SEQ * 0.8
        assert tok.decode(original) == tok.decode(window)
        assert sum(t in sentinels for t in source) == sum(t in sentinels for t in target) > 0


@pytest.mark.parametrize("kind", ["prefix_lm", "span_corruption", "ul2"])
def test_rows_depend_on_the_sample_only_so_resumes_and_batch_splits_agree(token_dir, kind):
    batches, sampler, data = objective(token_dir, objective=kind)
    whole = batches.train_batch(sampler, 40, 6)
    parts = [batches.train_batch(sampler, 40, 2), batches.train_batch(sampler, 42, 4)]
    for key in whole:
        assert torch.equal(whole[key], torch.cat([p[key] for p in parts]))
    other_seed = ObjectiveBatches(TrainConfig(objective=kind), SEQ, 99, batches.sentinels, batches.pad_id, False)
    assert not torch.equal(other_seed.train_batch(sampler, 40, 6)["targets"], whole["targets"])
    starts = np.arange(6) * SEQ
    val = batches.val_batch(data.val, starts)
    assert torch.equal(val["targets"][2:], batches.val_batch(data.val, starts[2:])["targets"])


def test_ul2_draws_its_denoisers_at_the_configured_rates(token_dir):
    batches, _, _ = objective(token_dir, objective="ul2", ul2_regular=0.5, ul2_extreme=0.3, ul2_sequential=0.2)
    g = torch.Generator().manual_seed(0)
    draws = [batches.denoiser(g) for _ in range(2000)]
    share = {kind: sum(d == kind for d in draws) / len(draws) for kind in {d for d in draws}}
    by_name = {(d.kind, d.noise_density): v for d, v in share.items()}
    assert by_name[("spans", 0.15)] == pytest.approx(0.5, abs=0.04)
    assert by_name[("spans", 0.5)] == pytest.approx(0.3, abs=0.04)
    assert by_name[("prefix", 0.0)] == pytest.approx(0.2, abs=0.04)


def test_too_few_sentinels_are_named_before_training(token_dir):
    data = TokenData(token_dir)
    sp = data.meta["special_tokens"]
    with pytest.raises(StageError, match=r"hides \d+ spans .* the tokenizer has 4 sentinels: raise tokenize.n_sentinels to \d+ or more"):
        ObjectiveBatches(TrainConfig(objective="span_corruption"), 256, 0, sp["sentinels"], sp["pad"], False)


@pytest.mark.parametrize("overrides, message", [
    (PREFIX, "model.attention=prefix with train.objective=lm has no prefix"),
    ([*T5], "model.arch=encoder_decoder with train.objective=lm gives the encoder nothing"),
    (["model.arch=encoder_decoder", "train.objective=span_corruption"], "needs pos_emb=relative"),
    (["model.pos_emb=sinusoidal"], "model.pos_emb=sinusoidal: pretrain writes a transformers export"),
    ([*T5, "train.objective=span_corruption", "model.qk_norm=true"], "needs qk_norm=false"),
    ([*T5, "train.objective=span_corruption", "model.tie_embeddings=false"], "needs tie_embeddings=true"),
    ([*T5, "train.objective=span_corruption", "model.attention=prefix"], "needs attention=causal"),
    ([*T5, "train.objective=span_corruption", "model.prompt_tokens=4"], "needs prompt_tokens=0"),
    (["model.pos_emb=relative"], "pos_emb=relative is the encoder-decoder's"),
    ([*T5, "train.objective=span_corruption", "train.tp=2", "train.nproc=2"],
     "model.arch=encoder_decoder trains with data parallelism only: set train.tp=1 train.pp=1"),
    ([*PREFIX, "train.objective=prefix_lm", "train.pp=2", "train.nproc=2"],
     "train.pp > 1 trains next-token prediction only; train.objective=prefix_lm needs train.pp=1"),
    (["train.objective=bert"], "train.objective must be one of lm|prefix_lm|span_corruption|ul2"),
    (["train.objective=ul2", "train.ul2_regular=0", "train.ul2_extreme=0", "train.ul2_sequential=0"],
     "a positive sum"),
])
def test_combinations_that_cannot_be_honoured_fail_when_the_dag_is_planned(overrides, message):
    with pytest.raises(StageError, match=message):
        build_steps(compose(["experiment=ci", *overrides]))


def test_a_step_whose_loss_is_next_token_refuses_another_objective(tmp_path):
    import logging

    from pipeline.core.train import distributed
    from pipeline.core.train.loop import Job, fit

    job = Job(name="finetune", model=torch.nn.Linear(2, 2), loss=None, batches=None, finish=None)
    with pytest.raises(StageError, match="finetune: train.objective=span_corruption is not what this step trains"):
        fit(job, TrainConfig(objective="span_corruption"), distributed.from_env(), torch.device("cpu"), tmp_path,
            logging.getLogger("test"))
