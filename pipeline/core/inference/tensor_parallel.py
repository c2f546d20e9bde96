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

Sharding slices the weights once, at load time, and covers what the compress stage writes:
    nn.Linear       rows (column-parallel) or columns (row-parallel) of the weight
    QuantLinear     rows: codes, scales and zero points of those output channels; columns:
                    those input columns' codes and their scale/zero groups (a group may not
                    straddle two processes). Rebuilt through ``QuantLinear.from_codes`` so
                    the packed words and the unpacked codes agree. W8A8 row-parallel layers
                    all-reduce each token's max |x| first, so every process quantizes its
                    columns with the scale one process computes over the whole row.
    LowRankLinear   column-parallel: rows of ``up``; row-parallel: columns of ``down``, whose
                    rank-r partial products are summed before the (replicated) ``up``, so
                    the all-reduce carries r values per token instead of d_model.
LoRA-wrapped (peft) layers are refused: merge the adapters first.
"""
from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from pipeline.core.errors import StageError
from pipeline.model.quantized import LowRankLinear, QuantLinear, quantize_activations_per_token


class RowParallel(nn.Module):
    """A row slice of a Linear whose partial products are summed over the processes."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.linear = linear

    def forward(self, x):
        y = self.linear(x)
        dist.all_reduce(y)
        return y


class RowParallelW8A8(nn.Module):
    """A row slice of a W8A8 QuantLinear. Its int8 activation scale is per token over the
    whole input row, so the processes agree on each token's max |x| (an all-reduce of one
    value per token) before quantizing their columns: the codes are the ones one process
    computes, only the float summation of the partial products differs (as for any
    row-parallel layer)."""

    def __init__(self, linear: QuantLinear):
        super().__init__()
        self.linear = linear

    def forward(self, x):
        amax = x.abs().amax(dim=-1, keepdim=True)
        dist.all_reduce(amax, op=dist.ReduceOp.MAX)
        xq = quantize_activations_per_token(x, self.linear.act_bits, amax)
        y = F.linear(xq, self.linear.dequantized_weight().to(x.dtype))  # QuantLinear's W8A8 product
        dist.all_reduce(y)
        return y


def _slice_linear(linear: nn.Linear, rank: int, world: int, dim: int) -> nn.Linear:
    w = linear.weight.detach().chunk(world, dim=dim)[rank].contiguous()
    out = nn.Linear(w.shape[1], w.shape[0], bias=False, device=w.device, dtype=w.dtype)
    out.weight = nn.Parameter(w, requires_grad=False)
    return out


def _slice_quant(m: QuantLinear, rank: int, world: int, dim: int, name: str) -> QuantLinear:
    codes, scale, zero = m.codes(), m.weight_scale.detach(), m.zero_points()
    if dim == 0:
        codes, scale, zero = (t.chunk(world, dim=0)[rank] for t in (codes, scale, zero))
    else:
        if m.group_size and (m.in_features // world) % m.group_size:
            raise StageError(f"tensor parallelism over {world} processes splits {name}'s {m.in_features} input "
                             f"columns into {m.in_features // world}, not a multiple of its quantization "
                             f"group_size {m.group_size}: a group would straddle two processes")
        codes = codes.chunk(world, dim=1)[rank]
        if m.group_size:  # per-channel (group_size 0): one scale per row, the same for every slice
            scale, zero = scale.chunk(world, dim=1)[rank], zero.chunk(world, dim=1)[rank]
    # from_codes packs on the host; the slice goes back where the layer was
    out = QuantLinear.from_codes(codes.cpu(), scale.cpu(), zero.cpu(), m.bits, m.group_size, m.symmetric,
                                 m.act_bits)
    return out.to(m.weight_scale.device).requires_grad_(False)


def _column(m: nn.Module, rank: int, world: int, name: str) -> nn.Module:
    """This process's output rows of ``m``."""
    if isinstance(m, QuantLinear):
        return _slice_quant(m, rank, world, 0, name)
    if isinstance(m, LowRankLinear):
        out = LowRankLinear(m.in_features, m.out_features // world, m.rank)
        out.down, out.up = m.down, _slice_linear(m.up, rank, world, 0)
        return out
    return _slice_linear(_plain(m, name), rank, world, 0)


def _row(m: nn.Module, rank: int, world: int, name: str) -> nn.Module:
    """This process's input columns of ``m``, its partial outputs summed over the processes."""
    if isinstance(m, QuantLinear):
        part = _slice_quant(m, rank, world, 1, name)
        return RowParallelW8A8(part) if m.act_bits else RowParallel(part)
    if isinstance(m, LowRankLinear):
        out = LowRankLinear(m.in_features // world, m.out_features, m.rank)
        out.down, out.up = RowParallel(_slice_linear(m.down, rank, world, 1)), m.up
        return out
    return RowParallel(_slice_linear(_plain(m, name), rank, world, 1))


def _plain(m: nn.Module, name: str) -> nn.Linear:
    if type(m) is not nn.Linear:
        hint = "merge the LoRA adapters first" if type(m).__module__.startswith("peft") else \
            "it shards nn.Linear, QuantLinear and LowRankLinear"
        raise StageError(f"tensor parallelism cannot shard {name} ({type(m).__module__}.{type(m).__name__}): {hint}")
    return m


def shard(model, rank: int, world: int):
    """Keep this process's share of every block (in place); -> the model."""
    cfg = model.cfg
    if cfg.n_kv_head % world or cfg.n_head % world or cfg.d_mlp % world:
        raise StageError(f"tensor parallelism over {world} processes needs n_head ({cfg.n_head}), n_kv_head "
                         f"({cfg.n_kv_head}) and d_mlp ({cfg.d_mlp}) divisible by {world}")
    seen = set()
    for i, block in enumerate(model.blocks):
        if id(block) in seen:  # a block tied to an earlier one (shared_blocks) is already sharded
            continue
        seen.add(id(block))
        for part, columns, rows in ((block.attn, ("q_proj", "k_proj", "v_proj"), ("o_proj",)),
                                    (block.mlp, ("gate_proj", "up_proj"), ("down_proj",))):
            prefix = f"blocks.{i}.{'attn' if part is block.attn else 'mlp'}"
            for n in columns:
                setattr(part, n, _column(getattr(part, n), rank, world, f"{prefix}.{n}"))
            for n in rows:
                setattr(part, n, _row(getattr(part, n), rank, world, f"{prefix}.{n}"))
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
