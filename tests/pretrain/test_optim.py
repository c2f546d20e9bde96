import math

import pytest
import torch

from pipeline.model import Config as ModelConfig
from pipeline.model import Transformer
from pipeline.core.train.optim import adamw, lr_factor, param_groups
from pipeline.core.train.config import Config
from pipeline.core.errors import StageError


def test_cosine_warms_up_linearly_then_decays_to_the_floor():
    cfg = Config(steps=100, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(10, cfg) == pytest.approx(1.0)
    mid = 10 + (99 - 10) / 2
    assert lr_factor(int(mid), cfg) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (int(mid) - 10) / 89)))
    assert lr_factor(99, cfg) == pytest.approx(0.1)
    factors = [lr_factor(s, cfg) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(factors, factors[1:]))


def test_wsd_is_flat_then_decays_linearly_over_the_last_fraction():
    cfg = Config(steps=100, warmup_steps=10, schedule="wsd", decay_frac=0.2, min_lr_ratio=0.0)
    assert [lr_factor(s, cfg) for s in (10, 50, 79)] == [1.0, 1.0, 1.0]
    assert lr_factor(80, cfg) == pytest.approx(1 - 1 / 20)
    assert lr_factor(89, cfg) == pytest.approx(0.5)
    assert lr_factor(99, cfg) == pytest.approx(0.0)


def test_decay_only_on_weight_matrices_not_norms_or_embeddings():
    model = Transformer(ModelConfig(vocab_size=64, n_layer=1, d_model=128, n_head=4, n_kv_head=2, d_mlp=128, max_seq_len=16))
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert "embed.weight" in skipped  # tied with lm_head: counted once, not decayed
    assert all(n.endswith("norm.weight") or n == "embed.weight" for n in skipped)
    assert "blocks.0.attn.q_proj.weight" in decayed and "blocks.0.mlp.down_proj.weight" in decayed
    assert len(decayed) + len(skipped) == len({id(p) for p in model.parameters()})
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0


def test_adamw_decoupled_decay_shrinks_weights_without_gradient():
    lin = torch.nn.Linear(4, 4, bias=False)
    before = lin.weight.detach().clone()
    opt = adamw(lin, Config(lr=0.1, weight_decay=0.5, fused="foreach"), "cpu")
    lin.weight.grad = torch.zeros_like(lin.weight)
    opt.step()
    # AdamW: w <- w - lr * wd * w, independent of the (zero) gradient's Adam update
    assert torch.allclose(lin.weight, before * (1 - 0.1 * 0.5))


def test_bad_values_name_the_key():
    with pytest.raises(StageError, match=r"train.schedule must be one of cosine\|wsd\|constant"):
        Config(schedule="linear").validate()
    with pytest.raises(StageError, match=r"train.warmup_steps"):
        Config(steps=10, warmup_steps=20).validate()
    with pytest.raises(StageError, match="rdzv_endpoint"):
        Config(nnodes=2).validate()
