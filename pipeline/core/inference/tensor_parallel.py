"""Tensor-parallel generation (Megatron-LM's split): each process holds 1/world of every
block and of the KV cache, and the processes produce the same tokens as one would.

    torchrun --standalone --nproc_per_node 2 -m pipeline.core.inference.tensor_parallel \\
        model=DIR prompt="Once upon a time" max_tokens=32 temperature=0

Attention is split by heads: q/k/v are column-parallel (each process computes its share of
query heads and the key/value heads they read, so grouped-query groups never straddle two
processes) and o_proj is row-parallel: each process multiplies its heads' slice and an
all-reduce sums the partial outputs. The MLP likewise: gate/up column-parallel, down
row-parallel. Two all-reduces per block, as Megatron. Embedding, norms and head are
replicated, so every process holds identical logits and samples the same token (each
request's seeded generator runs in every process). gloo on CPU, nccl on CUDA.
Sharding slices plain ``nn.Linear`` weights once, at load time.
"""
from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist
import torch.nn as nn

from pipeline.core.errors import StageError


class RowParallel(nn.Module):
    """A row slice of a Linear whose partial products are summed over the processes."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.linear = linear

    def forward(self, x):
        y = self.linear(x)
        dist.all_reduce(y)
        return y


def _slice(linear: nn.Linear, rank: int, world: int, dim: int) -> nn.Linear:
    if type(linear) is not nn.Linear:
        raise StageError(f"tensor parallelism shards plain nn.Linear layers, got {type(linear).__name__} "
                         "(merge adapters / dequantize first)")
    w = linear.weight.detach().chunk(world, dim=dim)[rank].contiguous()
    out = nn.Linear(w.shape[1], w.shape[0], bias=False, device=w.device, dtype=w.dtype)
    out.weight = nn.Parameter(w, requires_grad=False)
    return out


def shard(model, rank: int, world: int):
    """Keep this process's share of every block (in place); -> the model."""
    cfg = model.cfg
    if cfg.n_kv_head % world or cfg.n_head % world or cfg.d_mlp % world:
        raise StageError(f"tensor parallelism over {world} processes needs n_head ({cfg.n_head}), n_kv_head "
                         f"({cfg.n_kv_head}) and d_mlp ({cfg.d_mlp}) divisible by {world}")
    for block in model.blocks:
        attn, mlp = block.attn, block.mlp
        attn.q_proj, attn.k_proj, attn.v_proj = (_slice(m, rank, world, 0) for m in (attn.q_proj, attn.k_proj, attn.v_proj))
        attn.o_proj = RowParallel(_slice(attn.o_proj, rank, world, 1))
        mlp.gate_proj, mlp.up_proj = (_slice(m, rank, world, 0) for m in (mlp.gate_proj, mlp.up_proj))
        mlp.down_proj = RowParallel(_slice(mlp.down_proj, rank, world, 1))
    return model


def engine(model_dir, cfg=None, kernels: str | None = None):
    """This process's engine over its shard (call after init_process_group)."""
    from tokenizers import Tokenizer

    from pipeline.core.inference.engine import Engine, EngineConfig
    from pipeline.model.io import TOKENIZER, load_model, special_token_ids

    cfg = cfg or EngineConfig()
    rank, world = dist.get_rank(), dist.get_world_size()
    model = shard(load_model(model_dir, device=cfg.device, kernels=kernels).requires_grad_(False), rank, world)
    tok = Tokenizer.from_file(os.path.join(model_dir, TOKENIZER))
    return Engine(model, tok, cfg, special_token_ids(model_dir).get("eos"), kv_heads=model.cfg.n_kv_head // world)


def main(argv: list[str]) -> int:
    from pipeline.core.inference.cli import GenerateArgs, parse
    from pipeline.core.inference.sampling import SamplingParams

    args = parse(argv, GenerateArgs)
    if args.device_budget_mb or args.chat or args.stream:
        raise StageError("tensor-parallel generate takes plain prompts: device_budget_mb, chat and stream "
                         "are for the one-process generate command")
    dist.init_process_group("nccl" if args.device.startswith("cuda") else "gloo")
    try:
        if args.device.startswith("cuda"):
            args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
            torch.cuda.set_device(args.device)
        from pipeline.core.inference.engine import EngineConfig

        eng = engine(args.model, EngineConfig(device=args.device, block_size=args.block_size, max_batch=args.max_batch,
                                              kv_cache_tokens=args.kv_cache_tokens), args.kernels)
        params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, top_k=args.top_k,
                                top_p=args.top_p, seed=args.seed if args.seed is not None else 0, stop=args.stop)
        outs = eng.generate(args.prompt, params)
        if dist.get_rank() == 0:
            print(json.dumps([{"text": o.text, "token_ids": o.token_ids} for o in outs]))
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
