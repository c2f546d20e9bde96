"""Fused lm-head + cross-entropy that never holds the full (N, V) logits (Liger-Kernel's design).

For each chunk of rows: the logits (chunk, V) come from one cuBLAS matmul; a Triton kernel
reads each row twice (online max/sum-exp, then softmax) and overwrites the logits in place
with d(loss)/d(logits); two more matmuls turn that into the chunk's grad_hidden and its
contribution to grad_weight. All gradients are therefore ready when the forward returns;
the backward only scales them by grad_output. Peak extra memory is one (chunk, V) block.

The mean is over non-ignored rows; that count stays on the device (no host sync).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import INTERPRET, TRITON_DTYPE, CompileSpec
from .reference import scale_stored_grads

GPU_BLOCK_V, GPU_ROWS = 4096, 1
# The interpreter pays per program: give it many rows per program (the GPU wants one).
BLOCK_V, ROWS = (8192, 16) if INTERPRET else (GPU_BLOCK_V, GPU_ROWS)
NUM_WARPS = 8


@triton.jit
def _ce_loss_and_grad(logits_ptr, stride, targets_ptr, loss_ptr, n_valid_ptr, n_rows, V,
                      ignore_index, eps, HAS_SMOOTHING: tl.constexpr, WITH_GRAD: tl.constexpr,
                      ROWS: tl.constexpr, BLOCK_V: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < n_rows
    target = tl.load(targets_ptr + rows, mask=row_ok, other=ignore_index)
    valid = row_ok & (target != ignore_index)
    logits_ptr += rows[:, None] * stride
    cols = tl.arange(0, BLOCK_V)

    # Pass 1: online log-sum-exp over the vocab (and the logit sum, for label smoothing).
    m = tl.full((ROWS,), float("-inf"), tl.float32)
    d = tl.zeros((ROWS,), tl.float32)
    total = tl.zeros((ROWS,), tl.float32)
    for start in range(0, V, BLOCK_V):
        mask = row_ok[:, None] & (start + cols[None, :] < V)
        x = tl.load(logits_ptr + start + cols[None, :], mask=mask, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows past the end: all -inf
        d = d * tl.exp(m - m_safe) + tl.sum(tl.exp(x - m_safe[:, None]), axis=1)
        m = m_new
        if HAS_SMOOTHING:
            total += tl.sum(tl.where(mask, x, 0.0), axis=1)
    lse = tl.where(row_ok, m + tl.log(tl.where(row_ok, d, 1.0)), 0.0)  # 0 past the last row, not -inf
    x_target = tl.load(logits_ptr + tl.where(valid, target, 0)[:, None], mask=valid[:, None], other=0.0)
    loss = lse - tl.sum(x_target.to(tl.float32), axis=1)
    if HAS_SMOOTHING:
        # (1-eps) * nll + eps * mean over the vocab of -log p
        loss = (1.0 - eps) * loss + eps * (lse - total / V)
    tl.store(loss_ptr + rows, tl.where(valid, loss, 0.0), mask=row_ok)

    # Pass 2: d loss / d logits = (softmax - eps/V - (1-eps) * onehot) / n_valid, written over
    # the logits; zero on ignored rows (the buffer is reused as their gradient too).
    if WITH_GRAD:
        scale = tl.where(valid, 1.0 / tl.load(n_valid_ptr), 0.0)[:, None]
        for start in range(0, V, BLOCK_V):
            mask = row_ok[:, None] & (start + cols[None, :] < V)
            x = tl.load(logits_ptr + start + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            g = tl.exp(x - lse[:, None])
            hit = (start + cols[None, :]) == target[:, None]
            if HAS_SMOOTHING:
                g = tl.where(hit, g - eps / V - (1.0 - eps), g - eps / V)
            else:
                g = tl.where(hit, g - 1.0, g)
            tl.store(logits_ptr + start + cols[None, :], (g * scale).to(logits_ptr.dtype.element_ty), mask=mask)


def matmul_dtype(hidden, weight) -> torch.dtype:
    """The dtype the lm-head matmuls run in: autocast's when it is on (training keeps fp32
    master weights and runs matmuls in bf16), else the inputs' common dtype."""
    if torch.is_autocast_enabled(hidden.device.type):
        return torch.get_autocast_dtype(hidden.device.type)
    return torch.promote_types(hidden.dtype, weight.dtype)


class FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, ignore_index, label_smoothing, chunk_size, with_grad):
        mm = matmul_dtype(hidden, weight)
        with torch.autocast(hidden.device.type, enabled=False):  # dtypes are explicit below
            grads, loss = _forward(ctx, hidden, weight, targets, ignore_index, label_smoothing,
                                   chunk_size, with_grad, mm)
        ctx.save_for_backward(*grads)
        ctx.consumed = False
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        grad_hidden, grad_weight = scale_stored_grads(ctx, grad_out)
        return grad_hidden, grad_weight, None, None, None, None, None


def linear_cross_entropy(hidden, weight, targets, ignore_index: int = -100,
                         label_smoothing: float = 0.0, chunk_size: int = 4096):
    with_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    return FusedLinearCrossEntropy.apply(hidden, weight, targets, int(ignore_index),
                                         float(label_smoothing), int(chunk_size), with_grad)


def _forward(ctx, hidden, weight, targets, ignore_index, label_smoothing, chunk_size, with_grad, mm):
    N, H = hidden.shape
    V = weight.shape[0]
    hidden = hidden if hidden.stride(-1) == 1 else hidden.contiguous()
    targets = targets.contiguous()
    want_gh = with_grad and ctx.needs_input_grad[0]
    want_gw = with_grad and ctx.needs_input_grad[1]
    w = weight.to(mm)  # no copy unless autocast asks for a lower precision
    n_valid = (targets != ignore_index).sum().clamp_(min=1).to(torch.float32)
    loss_rows = torch.empty(N, dtype=torch.float32, device=hidden.device)
    grad_hidden = torch.empty_like(hidden) if want_gh else None
    grad_weight = torch.zeros_like(weight) if want_gw else None
    for start in range(0, N, chunk_size):
        rows = slice(start, start + chunk_size)
        h = hidden[rows].to(mm)
        logits = h @ w.t()  # (chunk, V) in the matmul dtype; the kernel computes in fp32
        n = h.shape[0]
        _ce_loss_and_grad[(triton.cdiv(n, ROWS),)](
            logits, logits.stride(0), targets[rows], loss_rows[rows], n_valid, n, V, ignore_index,
            label_smoothing, HAS_SMOOTHING=label_smoothing > 0, WITH_GRAD=want_gh or want_gw,
            ROWS=ROWS, BLOCK_V=BLOCK_V, num_warps=NUM_WARPS)
        if want_gh:
            grad_hidden[rows] = logits @ w
        if want_gw:
            if grad_weight.dtype == mm:
                grad_weight.addmm_(logits.t(), h)
            else:  # fp32 master weights under autocast: matmul in bf16, accumulate in fp32
                grad_weight.add_(logits.t() @ h)
        del logits  # free this chunk before the next one is allocated
    return (grad_hidden, grad_weight), loss_rows.sum() / n_valid  # fp32 loss, as Liger returns it


def compile_specs(dtype: torch.dtype, capability: int, **_):
    sig = {"logits_ptr": "*" + TRITON_DTYPE[dtype], "stride": "i32", "targets_ptr": "*i64",
           "loss_ptr": "*fp32", "n_valid_ptr": "*fp32", "n_rows": "i32", "V": "i32", "ignore_index": "i32",
           "eps": "fp32"}
    return [CompileSpec(f"linear_ce_{'smooth' if smooth else 'plain'}", _ce_loss_and_grad, sig,
                        {"HAS_SMOOTHING": smooth, "WITH_GRAD": True, "ROWS": GPU_ROWS, "BLOCK_V": GPU_BLOCK_V},
                        NUM_WARPS, 1, divisible=("stride", "V"))
            for smooth in (False, True)]
