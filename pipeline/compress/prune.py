"""Unstructured and n:m (2:4) pruning of every block Linear: magnitude, Wanda, SparseGPT.

    magnitude  drop the smallest |W| of each layer (no calibration)
    wanda      drop the smallest |W_ij| * ||X_j|| within each output row (Sun et al. 2024:
               weights that multiply large activations matter more; no weight update)
    sparsegpt  OBS pruning with the kept weights updated to compensate (Frantar & Alistarh
               2023), the same engine as GPTQ (obs.py)

Unstructured sparsity s zeroes round(s x size) weights of a layer (magnitude), of each row
(wanda) or of each block of columns (sparsegpt), as the papers do; n:m zeroes n of every m
consecutive input weights of a row (2:4 is what sparse tensor cores accelerate).
The weights stay dense tensors with zeros: the saved model loads anywhere; ``nonzeros`` in
the stats counts what is left.
"""
from __future__ import annotations

import torch

from pipeline.compress.calibrate import BLOCK_LINEARS, block_linears, output_error, sequential, weight_error
from pipeline.compress.obs import sparsegpt


def pattern_nm(pattern: str) -> tuple[int, int]:
    """"2:4" -> (2, 4) pruned of every 4; "unstructured" -> (0, 0)."""
    if pattern == "unstructured":
        return 0, 0
    n, m = (int(v) for v in pattern.split(":"))
    return m - n, m


def mask_from_scores(score: torch.Tensor, sparsity: float, n: int, m: int, per_row: bool) -> torch.Tensor:
    """True where a weight is pruned: the lowest scores (per row, or over the whole layer)."""
    mask = torch.zeros_like(score, dtype=torch.bool)
    if n:
        grouped = score.reshape(score.shape[0], -1, m)
        idx = torch.topk(grouped, n, dim=-1, largest=False).indices
        return mask.reshape(grouped.shape).scatter_(-1, idx, True).reshape(score.shape)
    if per_row:
        k = int(round(score.shape[1] * sparsity))
        if k:
            mask.scatter_(1, torch.topk(score, k, dim=1, largest=False).indices, True)
        return mask
    k = int(round(score.numel() * sparsity))
    if k:
        mask.view(-1)[torch.topk(score.reshape(-1), k, largest=False).indices] = True
    return mask


@torch.no_grad()
def prune_magnitude(model, ctx) -> None:
    n, m = pattern_nm(ctx.cfg.pattern)
    for name, linear in block_linears(model).items():
        W = linear.weight.detach().float().clone()
        mask = mask_from_scores(W.abs(), ctx.cfg.sparsity, n, m, per_row=False)
        linear.weight[mask] = 0
        ctx.errors.setdefault(name, {})["weight_error"] = round(weight_error(W, linear.weight), 6)


def prune_wanda(model, ctx) -> None:
    n, m = pattern_nm(ctx.cfg.pattern)

    @torch.no_grad()
    def block_fn(b, block, stats):
        for name in BLOCK_LINEARS:
            linear = block.get_submodule(name)
            W = linear.weight.detach().float().clone()
            score = W.abs() * stats[name].hessian.column_norms()[None, :]
            linear.weight[mask_from_scores(score, ctx.cfg.sparsity, n, m, per_row=True)] = 0
            _record(ctx, f"blocks.{b}.{name}", W, linear.weight, stats[name].hessian.matrix())

    sequential(model, ctx.ids, block_fn, ctx.cfg.calibration_batch_size, ctx.cfg.progress, desc="wanda")


def prune_sparsegpt(model, ctx) -> None:
    cfg = ctx.cfg
    n, m = pattern_nm(cfg.pattern)

    @torch.no_grad()
    def block_fn(b, block, stats):
        for name in BLOCK_LINEARS:
            linear = block.get_submodule(name)
            W, H = linear.weight.detach().float().clone(), stats[name].hessian.matrix()
            pruned, loss = sparsegpt(W, H, cfg.sparsity, n, m, cfg.damp, cfg.block_size)
            linear.weight.copy_(pruned)
            _record(ctx, f"blocks.{b}.{name}", W, pruned, H, obs_loss=loss)

    sequential(model, ctx.ids, block_fn, cfg.calibration_batch_size, cfg.progress, desc="sparsegpt")


def _record(ctx, name, W, W_new, H, **extra):
    ctx.errors.setdefault(name, {}).update({"weight_error": round(weight_error(W, W_new), 6),
                                            "output_error": round(output_error(W, W_new, H), 6), **extra})
