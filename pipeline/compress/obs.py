"""Optimal Brain Surgeon sweeps: GPTQ (quantize) and SparseGPT (prune) share one engine.

Both treat a Linear's weight W (out, in) one input column at a time, in the order of the
inverse Hessian's Cholesky factor U (upper, H^-1 = U^T U, H = 2 X^T X / n from calibration
inputs X): column j is replaced by its target value q_j (rounded, or zeroed where pruned) and
the error (w_j - q_j) / U_jj is spread over the columns not yet done, in proportion to U_j,
so the layer's output on X changes least (Frantar & Alistarh 2022, 2023). Updates are
lazy: a block of columns is finished in a small copy, and the rest of W is updated once per
block with one matmul (GPTQ's "lazy batch updates").

    H = Hessian(in_features); H.add(x) for each calibration batch
    q, scale, zero, loss = gptq(W, H.matrix(), bits=4, group_size=128)
    W_pruned, loss = sparsegpt(W, H.matrix(), sparsity=0.5)      # or n=2, m=4 for 2:4
"""
from __future__ import annotations

import torch

from pipeline.model.quantized import qrange, quant_params


class Hessian:
    """Running 2 X^T X / n over calibration inputs (..., in_features), in float64 for
    stability on long calibration sets, with the squared column norms Wanda needs."""

    def __init__(self, in_features: int):
        self.sum = torch.zeros(in_features, in_features, dtype=torch.float64)
        self.n = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).to(torch.float64)
        self.sum += x.T @ x
        self.n += x.shape[0]

    def matrix(self) -> torch.Tensor:
        return (2 * self.sum / max(self.n, 1)).to(torch.float32)

    def column_norms(self) -> torch.Tensor:
        """||X_j||_2 over every calibration token (Wanda's activation term)."""
        return self.sum.diagonal().clamp(min=0).sqrt().to(torch.float32)


def inverse_cholesky(H: torch.Tensor, W: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp * mean(diag H) I)^-1. Columns no calibration
    input ever touched (diag 0) are zeroed in W (in place) and get H_jj = 1, as GPTQ does."""
    H = H.clone()
    dead = H.diagonal() == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H.diagonal().add_(damp * H.diagonal().mean())
    L = torch.linalg.cholesky(H)
    return torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)


def sweep(W: torch.Tensor, U: torch.Tensor, block_size: int, target) -> float:
    """Replace W's columns in order by ``target(j, w_j, W1, U1, i)``'s values, spreading each
    error over the later columns; ``target.block(i1, W1, U1)`` runs first in each block.
    W is updated in place; returns the OBS loss sum (w - q)^2 / U_jj^2 / 2."""
    cols = W.shape[1]
    loss = 0.0
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        W1, U1 = W[:, i1:i2].clone(), U[i1:i2, i1:i2]
        Err1 = torch.zeros_like(W1)
        target.block(i1, W1, U1)
        for i in range(i2 - i1):
            w, d = W1[:, i], U1[i, i]
            q = target.column(i1 + i, w, W1, U1, i)
            err = (w - q) / d
            loss += float(((w - q) ** 2).sum() / d ** 2 / 2)
            W1[:, i:] -= err[:, None] @ U1[i, i:][None, :]
            W1[:, i] = q
            Err1[:, i] = err
        W[:, i1:i2] = W1
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    return loss


class _Quantize:
    """GPTQ's column target: round to the group's grid. Without act-order a group's scale and
    zero are found when the sweep reaches the group's first column, on the weights as updated
    so far (the original GPTQ); with act-order (static groups, as llm-compressor's
    "static" actorder) they are fixed up front on the original weights."""

    def __init__(self, W, bits, group_size, symmetric, perm, keep_zero):
        self.bits, self.symmetric = bits, symmetric
        self.group = group_size or W.shape[1]
        self.perm, self.keep_zero = perm, keep_zero
        out_f, in_f = W.shape
        self.scale = torch.ones(out_f, in_f // self.group)
        self.zero = torch.zeros(out_f, in_f // self.group, dtype=torch.int8)
        self.static = perm is not None
        if self.static:  # W arrives permuted; groups are over the original column order
            orig = W[:, torch.argsort(perm)]
            for g in range(in_f // self.group):
                self.scale[:, g], self.zero[:, g] = quant_params(orig[:, g * self.group:(g + 1) * self.group],
                                                                 bits, symmetric)

    def block(self, i1, W1, U1):
        pass

    def column(self, j, w, W1, U1, i):
        if not self.static and j % self.group == 0:
            g = j // self.group
            self.scale[:, g], self.zero[:, g] = quant_params(W1[:, i:i + self.group], self.bits, self.symmetric)
        g = (int(self.perm[j]) if self.static else j) // self.group
        qmin, qmax = qrange(self.bits)
        code = torch.clamp(torch.round(w / self.scale[:, g]) + self.zero[:, g], qmin, qmax)
        q = (code - self.zero[:, g]) * self.scale[:, g]
        if self.keep_zero is not None:  # a pruned weight stays pruned (exactly 0 on any grid)
            q = torch.where(self.keep_zero[:, j], torch.zeros_like(q), q)
        return q


def gptq(W: torch.Tensor, H: torch.Tensor, bits: int, group_size: int, symmetric: bool = True,
         damp: float = 0.01, block_size: int = 128, act_order: bool = False):
    """GPTQ-quantize W (out, in) -> (codes int8, scale (out, groups), zero int8, OBS loss).
    Zeros already in W (an earlier pruning step) stay zero."""
    from pipeline.model.quantized import quantize

    W = W.detach().clone().float()
    keep_zero = W == 0 if bool((W == 0).any()) else None
    perm = None
    if act_order:  # columns with the largest Hessian diagonal first: their error spreads furthest
        perm = torch.argsort(H.diagonal(), descending=True)
        W, H = W[:, perm], H[perm][:, perm]
        keep_zero = keep_zero[:, perm] if keep_zero is not None else None
    U = inverse_cholesky(H, W, damp)
    group = group_size or W.shape[1]
    target = _Quantize(W, bits, group_size, symmetric, perm, keep_zero)
    if group_size:  # a group's grid is found at its first column, from the block's updated copy
        block_size = max(block_size // group_size, 1) * group_size
    loss = sweep(W, U, block_size, target)
    if perm is not None:
        W = W[:, torch.argsort(perm)]
    scale = target.scale
    zero = target.zero
    full_scale = scale.repeat_interleave(group, dim=1)
    full_zero = zero.repeat_interleave(group, dim=1)
    codes = quantize(W, full_scale, full_zero, bits)
    return codes, scale, zero, loss


class _Prune:
    """SparseGPT's column target: a mask chosen per block of columns (unstructured: the
    smallest w^2 / U_jj^2 of the block; n:m: the n smallest of every m consecutive columns),
    and pruned weights set to 0."""

    def __init__(self, sparsity, n, m):
        self.sparsity, self.n, self.m = sparsity, n, m
        self.mask = None

    def block(self, i1, W1, U1):
        if self.n:
            self.mask = torch.zeros_like(W1, dtype=torch.bool)
            return
        score = W1 ** 2 / U1.diagonal()[None, :] ** 2
        k = int(score.numel() * self.sparsity)
        self.mask = torch.zeros_like(W1, dtype=torch.bool)
        if k:
            self.mask.view(-1)[torch.topk(score.view(-1), k, largest=False).indices] = True

    def column(self, j, w, W1, U1, i):
        if self.n and i % self.m == 0:
            score = W1[:, i:i + self.m] ** 2 / U1.diagonal()[i:i + self.m][None, :] ** 2
            idx = torch.topk(score, self.n, dim=1, largest=False).indices
            self.mask[:, i:i + self.m].scatter_(1, idx, True)
        return torch.where(self.mask[:, i], torch.zeros_like(w), w)


def sparsegpt(W: torch.Tensor, H: torch.Tensor, sparsity: float = 0.5, n: int = 0, m: int = 0,
              damp: float = 0.01, block_size: int = 128):
    """Prune W (out, in) to ``sparsity`` (or n:m), updating the kept weights -> (W', OBS loss)."""
    W = W.detach().clone().float()
    U = inverse_cholesky(H, W, damp)
    if m:
        block_size = max(block_size // m * m, m)
    loss = sweep(W, U, block_size, _Prune(sparsity, n, m))
    return W, loss
