"""The engine's fused q/k/v and gate/up matmuls (pipeline/core/inference/fused.py): the same
logits as the model's own layers, no second copy of the weights, and the layers' own modules
again once a weight stops being a view of the fused one."""
import pytest
import torch
from tokenizers import Tokenizer

from pipeline.core.inference import Engine, EngineConfig, SamplingParams
from pipeline.core.inference.forward import Batch, forward
from pipeline.core.inference.kv_cache import BlockTable
from tests.inference.conftest import random_model

GREEDY = SamplingParams(max_tokens=16, temperature=0, ignore_eos=True)
PROMPTS = ["the quick brown fox", "Once upon a time", "def main():\n"]


@pytest.fixture(scope="module")
def tok(tokenizer_dir):
    return Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))


def prefill_logits(engine, ids, fused):
    table = BlockTable()
    slots = engine.cache.append_slots(table, len(ids))
    batch = Batch.build([(ids, 0, table.blocks, slots, table.serial)], engine.device)
    out = forward(engine.model, engine.cache, batch, None, fused)
    engine.cache.free(table)
    return out


def test_fused_step_gives_the_layers_logits_and_tokens(tok):
    engine = Engine(random_model(), tok, EngineConfig(), fuse=True)
    assert all(qkv is not None and gu is not None for qkv, gu in engine.fused)
    ids = tok.encode(PROMPTS[0]).ids
    torch.testing.assert_close(prefill_logits(engine, ids, engine.fused), prefill_logits(engine, ids, None),
                               rtol=1e-5, atol=1e-5)
    fused_out = [c.token_ids for c in engine.generate(PROMPTS, GREEDY)]
    engine.fused = None
    assert [c.token_ids for c in engine.generate(PROMPTS, GREEDY)] == fused_out


def test_layers_weights_are_views_of_the_fused_weight(tok):
    model = random_model()
    before = sum(p.numel() for p in model.parameters())
    engine = Engine(model, tok, EngineConfig(), fuse=True)
    qkv, gate_up = engine.fused[0]
    attn = model.blocks[0].attn
    assert attn.k_proj.weight.untyped_storage().data_ptr() == qkv.weight.untyped_storage().data_ptr()
    assert model.blocks[0].mlp.up_proj.weight.untyped_storage().data_ptr() == gate_up.weight.untyped_storage().data_ptr()
    assert sum(p.numel() for p in model.parameters()) == before
    with torch.no_grad():  # an in-place change of a layer's weight is the fused weight's change
        attn.v_proj.weight.mul_(2)
    rows = attn.q_proj.weight.shape[0] + attn.k_proj.weight.shape[0]
    torch.testing.assert_close(qkv.weight[rows:], attn.v_proj.weight)


def test_only_a_model_the_engine_loaded_is_fused(tok, model_dir):
    assert Engine(random_model(), tok, EngineConfig()).fused is None  # a caller's model keeps its layout
    assert all(qkv is not None for qkv, _ in Engine.from_dir(model_dir).fused)


@pytest.mark.parametrize("layer", ["q_proj", "v_proj"])
def test_a_reassigned_weight_falls_back_to_the_layers(tok, layer):
    model = random_model()
    engine = Engine(model, tok, EngineConfig(), fuse=True)
    ids = tok.encode(PROMPTS[1]).ids
    attn = model.blocks[0].attn
    with torch.no_grad():
        proj = getattr(attn, layer)
        proj.weight.data = proj.weight.detach().clone() * 3  # no longer a view
    assert not engine.fused[0][0].valid()
    torch.testing.assert_close(prefill_logits(engine, ids, engine.fused), prefill_logits(engine, ids, None))


def test_a_second_engine_on_the_model_reuses_the_fused_weight(tok):
    """evaluate builds an engine per task on one model: the second must not copy the weights again."""
    model = random_model()
    first = Engine(model, tok, EngineConfig(), fuse=True)
    ptrs = [p.data_ptr() for p in model.parameters()]
    second = Engine(model, tok, EngineConfig(), fuse=True)
    assert [p.data_ptr() for p in model.parameters()] == ptrs  # the layers still view the first merge
    for (a_qkv, a_gu), (b_qkv, b_gu) in zip(first.fused, second.fused):
        assert b_qkv.weight.data_ptr() == a_qkv.weight.data_ptr() and b_qkv.valid()
        torch.testing.assert_close(b_qkv.weight, a_qkv.weight, rtol=0, atol=0)
        assert b_gu.weight.data_ptr() == a_gu.weight.data_ptr() and b_gu.valid()
    assert [c.token_ids for c in second.generate(PROMPTS, GREEDY)] == \
           [c.token_ids for c in first.generate(PROMPTS, GREEDY)]
