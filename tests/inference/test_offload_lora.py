"""Weights under a device budget smaller than the model (streamed per block) and unmerged
LoRA adapters (peft) generate exactly the tokens of the plain model."""
import copy

import pytest
import torch
from tokenizers import Tokenizer

from pipeline.core.errors import StageError
from pipeline.core.inference import Engine, EngineConfig, SamplingParams
from pipeline.core.inference.offload import LayerOffloader, _nbytes
from tests.inference.conftest import random_model, write_model_dir
from tests.inference.test_engine import PROMPTS

GREEDY = SamplingParams(max_tokens=20, temperature=0, ignore_eos=True)


@pytest.fixture(scope="module")
def tok(tokenizer_dir):
    return Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))


def test_a_budget_below_the_weights_streams_blocks_and_changes_no_token(tok):
    model = random_model(n_layer=4)
    expected = [o.token_ids for o in Engine(model, tok).generate(PROMPTS, GREEDY)]
    total = _nbytes(model)
    block = _nbytes(model.blocks[0])
    budget = total - block // 2  # embedding etc. + 3.5 blocks: 2 streaming slots and 1 resident block
    offloaded = copy.deepcopy(model)
    off = LayerOffloader(offloaded, "cpu", budget)
    assert off.streamed == [1, 2, 3] and off.resident == {0}
    assert all(p.numel() == 0 for i in off.streamed for p in offloaded.blocks[i].parameters())  # not held
    engine = Engine(offloaded, tok, offloader=off)
    assert [o.token_ids for o in engine.generate(PROMPTS, GREEDY)] == expected
    assert off.transfers >= 3 * engine.stats["steps"]  # every streamed block came in every step
    assert total > budget >= off.peak_bytes


def test_the_budget_comes_from_the_engine_config(tokenizer_dir, tmp_path):
    d = write_model_dir(tmp_path / "m", tokenizer_dir, model=random_model(n_layer=3))
    expected = [o.token_ids for o in Engine.from_dir(d).generate(PROMPTS[:2], GREEDY)]
    small = Engine.from_dir(d, EngineConfig(device_budget_mb=0.45))  # of ~0.52 MiB
    assert small.offloader.streamed and [o.token_ids for o in small.generate(PROMPTS[:2], GREEDY)] == expected
    with pytest.raises(StageError, match="device_budget_mb=0.01 is too small"):
        Engine.from_dir(d, EngineConfig(device_budget_mb=0.01))


def test_unmerged_lora_adapters_generate_what_the_merged_model_does(tok):
    from peft import LoraConfig, get_peft_model

    base = random_model()
    lora = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                          lora_dropout=0.0, init_lora_weights=False))
    inner = lora.base_model.model  # our Transformer, its q/v projections now peft LoRA Linears
    assert type(inner.blocks[0].attn.q_proj).__module__.startswith("peft")
    unmerged = [o.token_ids for o in Engine(inner, tok).generate(PROMPTS, GREEDY)]
    merged = lora.merge_and_unload()
    assert type(merged.blocks[0].attn.q_proj) is torch.nn.Linear
    assert [o.token_ids for o in Engine(merged, tok).generate(PROMPTS, GREEDY)] == unmerged
    assert unmerged != [o.token_ids for o in Engine(base, tok).generate(PROMPTS, GREEDY)]  # the adapter matters


def test_lora_wrapped_blocks_can_be_streamed_too(tok):
    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(random_model(n_layer=3), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                              init_lora_weights=False)).base_model.model
    expected = [o.token_ids for o in Engine(lora, tok).generate(PROMPTS[:2], GREEDY)]
    off = LayerOffloader(lora, "cpu", _nbytes(lora) - _nbytes(lora.blocks[0]) // 2)
    assert off.streamed
    assert [o.token_ids for o in Engine(lora, tok, offloader=off).generate(PROMPTS[:2], GREEDY)] == expected


def compressed_model_dir(path, tokenizer_dir):
    """A compressed model directory as the compress stage writes one: 4-bit QuantLinear q/v,
    a low-rank MLP down projection, compression.json naming them."""
    import json

    from pipeline.model.io import COMPRESSION
    from pipeline.model.quantized import LowRankLinear, QuantLinear, layer_entry, rtn, set_module

    model = random_model(n_layer=3)
    for i, block in enumerate(model.blocks):
        for name in ("q_proj", "v_proj"):
            q, scale, zero = rtn(getattr(block.attn, name).weight.detach(), 4, 0, True)
            set_module(model, f"blocks.{i}.attn.{name}", QuantLinear.from_codes(q, scale, zero, 4, 0, True))
        down = block.mlp.down_proj.weight.detach()
        u, s, vh = torch.linalg.svd(down, full_matrices=False)
        low = LowRankLinear(down.shape[1], down.shape[0], 32)
        with torch.no_grad():
            low.up.weight.copy_(u[:, :32] * s[:32]), low.down.weight.copy_(vh[:32])
        set_module(model, f"blocks.{i}.mlp.down_proj", low)
    d = write_model_dir(path, tokenizer_dir, model=model)
    layers = {n: e for n, m in model.named_modules() if (e := layer_entry(m)) is not None}
    (d / COMPRESSION).write_text(json.dumps({"layers": layers}))
    return d, model


def test_compressed_models_generate_what_their_own_forward_does(tokenizer_dir, tmp_path, tok):
    from pipeline.model.quantized import QuantLinear

    d, in_memory = compressed_model_dir(tmp_path / "c", tokenizer_dir)
    engine = Engine.from_dir(d)
    assert isinstance(engine.model.blocks[0].attn.q_proj, QuantLinear)
    outs = [o.token_ids for o in engine.generate(PROMPTS, GREEDY)]
    for prompt, out in zip(PROMPTS, outs):
        ids = torch.tensor([tok.encode(prompt).ids])
        assert out == in_memory.generate(ids, 20, temperature=0)[0, ids.shape[1]:].tolist(), prompt
    streamed = Engine.from_dir(d, EngineConfig(device_budget_mb=0.4))  # of ~0.45 MiB: packed blocks streamed too
    assert streamed.offloader.streamed and [o.token_ids for o in streamed.generate(PROMPTS, GREEDY)] == outs
    idle = [i for i in streamed.offloader.streamed if i not in streamed.offloader.loaded]  # not prefetched
    for i in idle:  # off the device a block keeps nothing: no unpacked codes either
        held = [t for m in streamed.model.blocks[i].modules() for t in
                [*m._parameters.values(), *m._buffers.values(), *vars(m).values()] if isinstance(t, torch.Tensor)]
        assert held and all(t.numel() == 0 for t in held), i
    assert idle
