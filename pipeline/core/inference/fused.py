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
wrappers and streamed (offloaded) blocks keep their own modules. ``Fused.valid`` checks, per
step, that every fused layer's weight is still its view (a model moved with ``.to()`` or a
weight re-assigned is not) and otherwise the step calls the modules, as before.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Fused:
    weight: torch.Tensor  # (sum of out widths, in)
    sizes: tuple[int, ...]  # the out width of each fused layer, in order
    layers: tuple[nn.Linear, ...]
    views: tuple[int, ...]  # data_ptr of each layer's view into ``weight``

    def valid(self) -> bool:
        return all(m.weight.data_ptr() == p for m, p in zip(self.layers, self.views))


def _fuse(layers: list) -> Fused | None:
    if not all(type(m) is nn.Linear and m.bias is None for m in layers):
        return None
    ws = [m.weight for m in layers]
    if len({(w.device, w.dtype, w.shape[1]) for w in ws}) != 1:
        return None
    sizes = tuple(w.shape[0] for w in ws)
    weight = _already_merged(ws, sizes)  # fused by an earlier engine on this model: no new copy
    if weight is None:
        with torch.no_grad():
            weight = torch.cat([w.detach() for w in ws])
            for m, rows in zip(layers, weight.split(sizes)):  # each weight becomes rows of the fused one
                m.weight.data = rows
    return Fused(weight, sizes, tuple(layers), tuple(m.weight.data_ptr() for m in layers))


def _already_merged(ws: list, sizes: tuple[int, ...]) -> torch.Tensor | None:
    """The merged weight when ``ws`` are already consecutive rows of one tensor (an engine made
    earlier on this model fused them), else None. evaluate builds an engine per task on one model;
    without this each would copy the weights again and the model's layers would move to the copy."""
    first = ws[0].detach()
    if not all(w.is_contiguous() and w.untyped_storage().data_ptr() == first.untyped_storage().data_ptr()
               for w in ws):
        return None
    row_bytes = first.element_size() * first.shape[1]
    at = first.data_ptr()  # where the next weight's rows must start
    for w, rows in zip(ws, sizes):
        if w.data_ptr() != at:
            return None
        at += rows * row_bytes
    return first.as_strided((sum(sizes), first.shape[1]), (first.shape[1], 1))


def fuse_projections(model) -> list[tuple[Fused | None, Fused | None]]:
    """(q/k/v, gate/up) per block; None where a block's layers cannot be fused."""
    return [(_fuse([b.attn.q_proj, b.attn.k_proj, b.attn.v_proj]), _fuse([b.mlp.gate_proj, b.mlp.up_proj]))
            for b in model.blocks]
