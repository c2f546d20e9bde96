"""Low-rank factorisation of every block Linear by truncated SVD.

W (out, in) = U S V^T; the best rank-r approximation in Frobenius norm (Eckart-Young) keeps
the r largest singular values: W ~= (U_r S_r^1/2) (S_r^1/2 V_r^T) = up @ down, stored as two
Linears (in -> r -> out). The rank is fixed (``rank``) or the smallest keeping a fraction of
the spectrum's energy sum(S_r^2) / sum(S^2) >= ``energy``. A layer whose factors would not be
smaller than W (r >= in * out / (in + out)) stays dense, and compression.json says so.
"""
from __future__ import annotations

import torch

from pipeline.compress.calibrate import block_linears, weight_error
from pipeline.model.quantized import LowRankLinear, set_module


def rank_for_energy(S: torch.Tensor, energy: float) -> int:
    cumulative = torch.cumsum(S.double() ** 2, 0) / (S.double() ** 2).sum()
    return int(torch.searchsorted(cumulative, torch.tensor(energy, dtype=torch.float64)).item()) + 1


@torch.no_grad()
def factorize(model, ctx) -> None:
    for name, linear in block_linears(model).items():
        W = linear.weight.detach().float()
        U, S, Vh = torch.linalg.svd(W, full_matrices=False)
        r = ctx.cfg.rank or rank_for_energy(S, ctx.cfg.energy)
        r = min(r, len(S))
        out_f, in_f = W.shape
        entry = {"rank": r, "energy_kept": round(float((S[:r] ** 2).sum() / (S ** 2).sum()), 6)}
        if r * (in_f + out_f) >= in_f * out_f:
            entry["kept_dense"] = f"rank {r} factors ({r * (in_f + out_f)} weights) are not smaller than W ({in_f * out_f})"
            ctx.errors.setdefault(name, {}).update(entry)
            continue
        root = S[:r].sqrt()
        module = LowRankLinear(in_f, out_f, r)
        module.down.weight.copy_(root[:, None] * Vh[:r])
        module.up.weight.copy_(U[:, :r] * root[None, :])
        entry["weight_error"] = round(weight_error(W, module.dequantized_weight()), 6)
        ctx.errors.setdefault(name, {}).update(entry)
        set_module(model, name, module)
