"""Projections that read the same input, run as one matmul: q/k/v, and the MLP's gate/up
(vLLM's QKVParallelLinear and MergedColumnParallelLinear, llama.cpp's fused QKV).

A decode step of a small model is a few rows per sequence, so each matmul is tiny and the
cost of a call (dispatch, packing, the module's Python) outweighs its arithmetic: three
calls for q/k/v and two for gate/up become one each. The concatenated weights are copied
once, when the engine starts; the split outputs equal the separate products bit for bit
(each output column is the same dot product). Only plain ``nn.Linear`` modules are fused: a
quantized Linear or an unmerged LoRA wrapper runs as its own module, so it computes what it
was built to compute. The copies hold a snapshot: an engine built on a model serves the
weights the model had then (a new engine picks up later changes).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

Projection = Callable[[torch.Tensor], list[torch.Tensor]]


def _plain(modules: list[nn.Module]) -> bool:
    if not all(type(m) is nn.Linear for m in modules):
        return False
    first = modules[0].weight
    same = all(m.weight.dtype == first.dtype and m.weight.device == first.device for m in modules)
    return same and len({m.bias is None for m in modules}) == 1


def fuse(modules: list[nn.Module], enabled: bool = True) -> Projection:
    """x -> [module(x) for module in modules], as one matmul when every module is plain."""
    if not (enabled and _plain(modules)):
        return lambda x: [m(x) for m in modules]
    with torch.no_grad():
        weight = torch.cat([m.weight.detach() for m in modules])
        bias = None if modules[0].bias is None else torch.cat([m.bias.detach() for m in modules])
    sizes = [m.out_features for m in modules]
    return lambda x: F.linear(x, weight, bias).split(sizes, dim=-1)


class LayerProjections:
    """One block's fused input projections: ``qkv(x)`` -> [q, k, v], ``gate_up(x)`` -> [gate, up]."""

    def __init__(self, block: nn.Module, enabled: bool = True):
        attn, mlp = block.attn, block.mlp
        self.qkv = fuse([attn.q_proj, attn.k_proj, attn.v_proj], enabled)
        self.gate_up = fuse([mlp.gate_proj, mlp.up_proj], enabled)


def fuse_model(model: nn.Module, enabled: bool = True) -> list[LayerProjections]:
    return [LayerProjections(block, enabled) for block in model.blocks]
