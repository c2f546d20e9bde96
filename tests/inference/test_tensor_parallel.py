"""Two processes (torchrun, gloo) each holding half of every block generate the tokens one
process does, on plain and on compressed models."""
import copy
import json
import os
import subprocess
import sys

import pytest
import torch

from pipeline.core.errors import StageError
from pipeline.core.inference import Engine, SamplingParams
from pipeline.core.inference.tensor_parallel import shard
from pipeline.model.io import COMPRESSION
from pipeline.model.quantized import (LowRankLinear, QuantLinear, dense_weight, layer_entry, rtn, set_module,
                                      unpack_from_int32)
from tests.inference.conftest import random_model, write_model_dir
from tests.inference.test_offload_lora import compressed_model_dir

PROMPTS = ["the quick", "Once upon a time there was a café", "def main():\n"]


def test_two_processes_generate_what_one_does(tokenizer_dir, tmp_path, repo):
    d = write_model_dir(tmp_path / "m", tokenizer_dir, model=random_model(n_layer=2, n_head=4, n_kv_head=2))
    greedy = Engine.from_dir(d).generate(PROMPTS, SamplingParams(max_tokens=16, temperature=0))
    outs = _torchrun(d, repo, PROMPTS)
    assert [o["token_ids"] for o in outs] == [g.token_ids for g in greedy]
    assert [o["text"] for o in outs] == [g.text for g in greedy]


def test_shapes_that_do_not_split_are_refused():
    with pytest.raises(StageError, match="divisible by 2"):
        shard(random_model(n_kv_head=1), 0, 2)


def _torchrun(d, repo, prompts):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "pipeline.core.inference.tensor_parallel", f"model={d}", *[f"prompt={p}" for p in prompts],
           "max_tokens=16", "temperature=0"]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def _every_kind(model):
    """On top of compressed_model_dir's layers (per-channel 4-bit q/v, low-rank down_proj):
    grouped asymmetric 4-bit o_proj and k_proj (row- and column-parallel groups and packed zero
    points), W8A8 gate/up (column) and a W8A8 o_proj (row-parallel: scales over the full row)."""
    for i, block in enumerate(model.blocks):
        kinds = {"attn.o_proj": (4, 16, False, None), "attn.k_proj": (4, 16, False, None)} if i != 1 else \
            {"attn.o_proj": (8, 0, True, 8), "mlp.gate_proj": (8, 0, True, 8), "mlp.up_proj": (8, 0, True, 8)}
        for name, (bits, group, sym, act) in kinds.items():
            q, scale, zero = rtn(block.get_submodule(name).weight.detach(), bits, group, sym)
            set_module(model, f"blocks.{i}.{name}", QuantLinear.from_codes(q, scale, zero, bits, group, sym, act))
    return model


def test_two_processes_generate_what_one_does_on_a_compressed_model(tokenizer_dir, tmp_path, repo):
    _, model = compressed_model_dir(tmp_path / "c", tokenizer_dir)
    d = write_model_dir(tmp_path / "m", tokenizer_dir, model=_every_kind(model))
    (d / COMPRESSION).write_text(json.dumps({"layers": {n: e for n, m in model.named_modules()
                                                        if (e := layer_entry(m)) is not None}}))
    one = Engine.from_dir(d)
    assert isinstance(one.model.blocks[1].attn.o_proj, QuantLinear) and one.model.blocks[1].attn.o_proj.act_bits
    greedy = one.generate(PROMPTS, SamplingParams(max_tokens=16, temperature=0))
    outs = _torchrun(d, repo, PROMPTS)
    assert [o["token_ids"] for o in outs] == [g.token_ids for g in greedy]
    assert [o["text"] for o in outs] == [g.text for g in greedy]


def _whole(m):
    """The dense weight a (possibly wrapped) slice applies."""
    m = getattr(m, "linear", m)
    if isinstance(m, LowRankLinear):
        return m.up.weight @ getattr(m.down, "linear", m.down).weight
    return dense_weight(m)


def test_the_slices_of_every_compressed_kind_make_up_the_layer(tokenizer_dir, tmp_path):
    _, model = compressed_model_dir(tmp_path / "c", tokenizer_dir)
    model = _every_kind(model)
    halves = [shard(copy.deepcopy(model), rank, 2) for rank in (0, 1)]
    for i, block in enumerate(model.blocks):
        for name, dim in [(f"attn.{n}", 0) for n in ("q_proj", "k_proj", "v_proj")] + [("attn.o_proj", 1)] + \
                [(f"mlp.{n}", 0) for n in ("gate_proj", "up_proj")] + [("mlp.down_proj", 1)]:
            whole = block.get_submodule(name)
            parts = [h.blocks[i].get_submodule(name) for h in halves]
            torch.testing.assert_close(torch.cat([_whole(p) for p in parts], dim=dim), dense_weight(whole),
                                       rtol=0, atol=1e-6, msg=f"blocks.{i}.{name}")
            for p in parts:
                inner = getattr(p, "linear", p)
                if isinstance(inner, QuantLinear):  # the packed words agree with the codes the forward reads
                    assert torch.equal(unpack_from_int32(inner.weight_packed, inner.bits, inner.weight_codes.shape),
                                       inner.weight_codes)
                    assert inner.act_bits == whole.act_bits and type(p).__name__ == (
                        "RowParallelW8A8" if dim == 1 and whole.act_bits else "RowParallel" if dim == 1 else "QuantLinear")


def test_a_quantization_group_across_two_processes_is_refused():
    model = random_model()
    q, scale, zero = rtn(model.blocks[0].attn.o_proj.weight.detach(), 4, 64, True)  # 64 inputs, 32 a process
    set_module(model, "blocks.0.attn.o_proj", QuantLinear.from_codes(q, scale, zero, 4, 64, True))
    with pytest.raises(StageError, match=r"blocks\.0\.attn\.o_proj.*group_size 64"):
        shard(model, 0, 2)


def test_lora_wrapped_layers_are_refused_by_name():
    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(random_model(), LoraConfig(r=4, target_modules=["v_proj"])).base_model.model
    with pytest.raises(StageError, match=r"blocks\.0\.attn\.v_proj .*merge the LoRA adapters"):
        shard(lora, 0, 2)


def test_blocks_tied_together_are_sharded_once():
    from pipeline.model.quantized import tie_blocks

    model = random_model(n_layer=3)
    tie_blocks(model, [[0, 2]])  # ALBERT-style sharing, as compression.json's shared_blocks asks
    shard(model, 0, 2)
    assert model.blocks[2] is model.blocks[0] and model.blocks[0].attn.q_proj.weight.shape == (32, 64)
    assert type(model.blocks[0].attn.o_proj.linear) is torch.nn.Linear  # not a slice of a slice
