"""Activation-aware per-channel scaling before quantization: AWQ and SmoothQuant.

Both rescale input channel j of the Linears that read one activation by s_j and fold 1/s_j
into the op that produced it (an RMSNorm's weight, or the rows of the previous Linear), so
the float model computes exactly the same function while the quantizer sees better-shaped
weights. The groups are the Llama mappings llm-compressor uses:

    [q, k, v] <- attn_norm     [gate, up] <- mlp_norm     [down] <- up
    [o] <- v                   (AWQ, only when n_kv_head == n_head: with grouped-query
                                attention one v channel feeds several o columns)

AWQ (Lin et al. 2024): s = mean|x|^a, a searched on a grid in [0, 1) per group to minimise
the mean squared error of the group's outputs on calibration rows with the weights
round-to-nearest quantized (the paper scores the enclosing module's output; the group's own
Linears are the part the scale changes). SmoothQuant (Xiao et al. 2023): s = max|x|^alpha /
max|w|^(1 - alpha), moving activation outliers into the weights so int8 activations (per
token) and int8 weights (per channel) both quantize well; alpha is fixed (the paper's 0.5,
llm-compressor's smoothing_strength) or, with ``smooth_grid`` > 0, searched per group as AWQ
searches its exponent: the strength on the grid, or no smoothing, with the least W8A8 output
error on calibration rows.
"""
from __future__ import annotations

import torch

from pipeline.compress.calibrate import BLOCK_LINEARS, sequential
from pipeline.compress.quantize import fake_quantize, replace_with_rtn


def scale_groups(block, mha: bool) -> list[tuple[object, list[str]]]:
    """(op that produces the input, names of the Linears that read it) for one block."""
    groups = [(block.attn_norm, ["attn.q_proj", "attn.k_proj", "attn.v_proj"]),
              (block.mlp_norm, ["mlp.gate_proj", "mlp.up_proj"]),
              (block.mlp.up_proj, ["mlp.down_proj"])]
    if mha:
        groups.append((block.attn.v_proj, ["attn.o_proj"]))
    return groups


@torch.no_grad()
def fold_scale(block, prev, names: list[str], s: torch.Tensor) -> None:
    """x -> x / s at the producer, W -> W * s at the readers: the float function is unchanged."""
    if isinstance(prev, torch.nn.Linear):
        prev.weight.div_(s[:, None])
    else:  # RMSNorm: its weight multiplies the normalised activation channel-wise
        prev.weight.div_(s)
    for n in names:
        block.get_submodule(n).weight.mul_(s[None, :])


def awq_scale(X: torch.Tensor, x_mean: torch.Tensor, W: torch.Tensor, cfg) -> tuple[torch.Tensor, float, float]:
    """The AWQ scale for inputs X (rows, in) of the stacked weights W (out, in) -> (s, exponent, loss ratio)."""
    ref = X @ W.T
    best = (None, None, float("inf"))
    base = None
    for k in range(cfg.awq_grid):
        a = k / cfg.awq_grid
        s = x_mean.clamp(min=1e-4).pow(a)
        s = s / (s.max() * s.min()).sqrt()
        Wq = fake_quantize(W * s[None, :], cfg.bits, cfg.group_size, cfg.symmetric) / s[None, :]
        loss = float(((X @ Wq.T - ref) ** 2).mean())
        base = loss if k == 0 else base
        if loss < best[2]:
            best = (s, a, loss)
    return best[0], best[1], best[2] / max(base, 1e-30)


def quantize_awq(model, ctx) -> None:
    cfg = ctx.cfg
    mha = model.cfg.n_kv_head == model.cfg.n_head

    def block_fn(b, block, stats):
        scales = {}
        for prev, names in scale_groups(block, mha):
            st = stats[names[0]]
            W = torch.cat([block.get_submodule(n).weight.detach().float() for n in names])
            s, a, ratio = awq_scale(st.sample_rows(), st.abs_mean, W, cfg)
            fold_scale(block, prev, names, s)
            for n in names:
                scales[n] = s
                ctx.errors.setdefault(f"blocks.{b}.{n}", {}).update(
                    {"awq_exponent": a, "awq_loss_vs_unscaled": round(ratio, 6)})
        _quantize_block(block, b, stats, scales, ctx, cfg.bits, cfg.group_size, cfg.symmetric, None)

    sequential(model, ctx.ids, block_fn, cfg.calibration_batch_size, cfg.progress, desc="awq")


def smooth_scale(x_max: torch.Tensor, w_max: torch.Tensor, alpha: float) -> torch.Tensor:
    return (x_max.pow(alpha) / w_max.pow(1 - alpha)).clamp(min=1e-5)


def w8a8_error(X: torch.Tensor, W: torch.Tensor, s: torch.Tensor, ref: torch.Tensor | None = None) -> float:
    """Mean squared output error of int8 per-token activations X / s times int8 per-channel W * s
    against the float output ``ref`` (X @ W.T unless given)."""
    from pipeline.model.quantized import quantize_activations_per_token

    Wq = fake_quantize(W * s[None, :], 8, 0, True)
    ref = X @ W.T if ref is None else ref
    return float(((quantize_activations_per_token(X / s[None, :]) @ Wq.T - ref) ** 2).mean())


def searched_smooth_scale(X, x_max, W, w_max, grid: int) -> tuple[torch.Tensor, float | None, float]:
    """The migration strength in {0, 1/grid, ..., 1} or no smoothing at all (None) whose W8A8
    output error on the calibration rows X is least -> (s, alpha, error / unsmoothed error)."""
    ref = X @ W.T  # the float output every candidate is scored against
    unsmoothed = w8a8_error(X, W, torch.ones_like(x_max), ref)
    best = (torch.ones_like(x_max), None, unsmoothed)
    for k in range(grid + 1):
        s = smooth_scale(x_max, w_max, k / grid)
        err = w8a8_error(X, W, s, ref)
        if err < best[2]:
            best = (s, k / grid, err)
    return best[0], best[1], best[2] / max(unsmoothed, 1e-30)


def quantize_smoothquant(model, ctx) -> None:
    cfg = ctx.cfg

    def block_fn(b, block, stats):
        scales = {}
        for prev, names in scale_groups(block, mha=False):
            x_max = stats[names[0]].abs_max.clamp(min=1e-5)
            W = torch.cat([block.get_submodule(n).weight.detach().float() for n in names])
            w_max = W.abs().amax(0).clamp(min=1e-5)
            if cfg.smooth_grid:
                s, alpha, ratio = searched_smooth_scale(stats[names[0]].sample_rows(), x_max, W, w_max, cfg.smooth_grid)
                for n in names:
                    ctx.errors.setdefault(f"blocks.{b}.{n}", {}).update(
                        {"smooth_alpha": alpha, "smooth_loss_vs_unsmoothed": round(ratio, 6)})
            else:
                s = smooth_scale(x_max, w_max, cfg.smooth_alpha)
            fold_scale(block, prev, names, s)
            scales.update({n: s for n in names})
        _quantize_block(block, b, stats, scales, ctx, 8, 0, True, 8)

    sequential(model, ctx.ids, block_fn, cfg.calibration_batch_size, cfg.progress, desc="smoothquant")


def _quantize_block(block, b, stats, scales, ctx, bits, group_size, symmetric, act_bits) -> None:
    """Round-to-nearest every Linear of the (rescaled) block. Errors are scored on the inputs
    the rescaled layer sees, x / s, whose Hessian is H / (s s^T)."""
    for n in BLOCK_LINEARS:
        H = stats[n].hessian.matrix()
        if n in scales:
            H = H / torch.outer(scales[n], scales[n])
        replace_with_rtn(block, n, bits, group_size, symmetric, act_bits, ctx, H, record_as=f"blocks.{b}.{n}")
