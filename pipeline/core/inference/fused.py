"""Fused projections for the engine's eager step: q/k/v as one matmul, gate/up as another.

A decode step of a small model on the CPU pays per op, not per FLOP (forward.py), and seven
of a layer's ops are its Linear layers. vLLM merges them (QKVParallelLinear,
MergedColumnParallelLinear); so does this file, without a second copy of the weights: the
fused weight is one tensor and each layer's own ``weight`` becomes a view of its rows, so
the model's modules and in-place updates see the same numbers. ``Engine.from_dir`` fuses
the model it loads; ``Engine(model, fuse=True)`` opts in for a caller's model (off by
default: a model that is trained on or saved afterwards should keep one tensor per weight,
as safetensors wants).

Measured (cpu_2m, batch 16, 64 new tokens, one thread, same process, alternating): 0.61-0.63 s
fused vs 0.65-0.66 s unfused, ~5%.

Only plain ``nn.Linear`` layers without bias are fused; quantized layers, unmerged LoRA
wrappers and streamed (offloaded) blocks keep their own modules. ``weights_of`` checks, per
step, that a layer's weight is still the view (a model moved with ``.to()`` or a weight
re-assigned is not) and otherwise the step calls the modules, as before.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Fused:
    weight: torch.Tensor  # (sum of out widths, in)
    sizes: tuple[int, ...]  # the out width of each fused layer, in order
    first: nn.Linear  # the first fused layer, whose weight must still be a view of ``weight``

    def valid(self) -> bool:
        return self.first.weight.data_ptr() == self.weight.data_ptr()


def _fuse(layers: list) -> Fused | None:
    if not all(type(m) is nn.Linear and m.bias is None for m in layers):
        return None
    ws = [m.weight for m in layers]
    if len({(w.device, w.dtype, w.shape[1]) for w in ws}) != 1:
        return None
    with torch.no_grad():
        weight = torch.cat([w.detach() for w in ws])
        row = 0
        for m in layers:  # each layer's weight becomes rows of the fused one: no second copy
            n = m.weight.shape[0]
            m.weight.data = weight[row:row + n]
            row += n
    return Fused(weight, tuple(m.weight.shape[0] for m in layers), layers[0])


def fuse_projections(model) -> list[tuple[Fused | None, Fused | None]]:
    """(q/k/v, gate/up) per block; None where a block's layers cannot be fused."""
    out = []
    for block in model.blocks:
        attn, mlp = block.attn, block.mlp
        out.append((_fuse([attn.q_proj, attn.k_proj, attn.v_proj]),
                    _fuse([mlp.gate_proj, mlp.up_proj]) if hasattr(mlp, "gate_proj") else None))
    return out
