"""A block's projections as few matmuls as possible: q/k/v as one, the MLP's gate/up as one
(vLLM's QKVParallelLinear and MergedColumnParallelLinear, llama.cpp's fused QKV).

A decode step of a small model is a few rows per sequence, so each matmul is tiny and the
cost of a call (dispatch, packing, the module's Python) outweighs its arithmetic: three
calls for q/k/v and two for gate/up become one each. The concatenated weights are copied
once, when the engine starts; the fused output equals the separate products bit for bit
(each output column is the same dot product). Only plain ``nn.Linear`` modules are fused: a
quantized Linear or an unmerged LoRA wrapper runs as its own module (their outputs are then
concatenated), so it computes what it was built to compute. The copies hold a snapshot: an
engine built on a model serves the weights the model had then (a new engine picks up later
changes). ``enabled=False`` (the layer offloader, which moves module weights) calls every
module as it is.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

Projection = Callable[[torch.Tensor], torch.Tensor]


def _plain(modules: list[nn.Module]) -> bool:
    if not all(type(m) is nn.Linear for m in modules):
        return False
    first = modules[0].weight
    same = all(m.weight.dtype == first.dtype and m.weight.device == first.device for m in modules)
    return same and len({m.bias is None for m in modules}) == 1


def fuse(modules: list[nn.Module], enabled: bool = True) -> Projection:
    """x -> cat([module(x) for module in modules], -1), one matmul when every module is plain."""
    if not (enabled and _plain(modules)):
        return modules[0] if len(modules) == 1 else lambda x: torch.cat([m(x) for m in modules], -1)
    if len(modules) == 1:  # nothing to copy: the module's own weight, without the module call
        m = modules[0]
        return lambda x: F.linear(x, m.weight, m.bias)
    with torch.no_grad():
        weight = torch.cat([m.weight.detach() for m in modules])
        bias = None if modules[0].bias is None else torch.cat([m.bias.detach() for m in modules])
    return lambda x: F.linear(x, weight, bias)


class LayerProjections:
    """One block's projections: ``qkv(x)`` -> [q | k | v], ``gate_up(x)`` -> [gate | up],
    ``o(x)``, ``down(x)``."""

    def __init__(self, block: nn.Module, enabled: bool = True):
        attn, mlp = block.attn, block.mlp
        self.qkv = fuse([attn.q_proj, attn.k_proj, attn.v_proj], enabled)
        self.gate_up = fuse([mlp.gate_proj, mlp.up_proj], enabled)
        self.o = fuse([attn.o_proj], enabled)
        self.down = fuse([mlp.down_proj], enabled)


def fuse_model(model: nn.Module, enabled: bool = True) -> list[LayerProjections]:
    return [LayerProjections(block, enabled) for block in model.blocks]
