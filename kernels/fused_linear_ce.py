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

GPU_BLOCK_V = 4096
BLOCK_V = 8192 if INTERPRET else GPU_BLOCK_V
NUM_WARPS = 8 if not INTERPRET else 1


@triton.jit
def _ce_loss_and_grad(logits_ptr, stride, targets_ptr, loss_ptr, n_valid_ptr, V, ignore_index,
                      eps, HAS_SMOOTHING: tl.constexpr, WITH_GRAD: tl.constexpr,
                      BLOCK_V: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    logits_ptr += row * stride
    target = tl.load(targets_ptr + row)
    cols = tl.arange(0, BLOCK_V)
    if target == ignore_index:
        tl.store(loss_ptr + row, 0.0)
        if WITH_GRAD:
            for start in range(0, V, BLOCK_V):
                tl.store(logits_ptr + start + cols, tl.zeros((BLOCK_V,), tl.float32).to(
                    logits_ptr.dtype.element_ty), mask=start + cols < V)
        return

    # Pass 1: online log-sum-exp over the vocab (and the logit sum, for label smoothing).
    m = float("-inf")
    d = 0.0
    total = 0.0
    for start in range(0, V, BLOCK_V):
        mask = start + cols < V
        x = tl.load(logits_ptr + start + cols, mask=mask, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, axis=0))
        d = d * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), axis=0)
        m = m_new
        if HAS_SMOOTHING:
            total += tl.sum(tl.where(mask, x, 0.0), axis=0)
    lse = m + tl.log(d)
    x_target = tl.load(logits_ptr + target).to(tl.float32)
    loss = lse - x_target
    if HAS_SMOOTHING:
        # (1-eps) * nll + eps * mean over the vocab of -log p
        loss = (1.0 - eps) * loss + eps * (lse - total / V)
    tl.store(loss_ptr + row, loss)

    # Pass 2: d loss / d logits = (softmax - eps/V - (1-eps) * onehot) / n_valid, in place.
    if WITH_GRAD:
        inv_n = 1.0 / tl.load(n_valid_ptr)
        for start in range(0, V, BLOCK_V):
            mask = start + cols < V
            x = tl.load(logits_ptr + start + cols, mask=mask, other=0.0).to(tl.float32)
            g = tl.exp(x - lse)
            if HAS_SMOOTHING:
                g = g - eps / V
                g = tl.where(start + cols == target, g - (1.0 - eps), g)
            else:
                g = tl.where(start + cols == target, g - 1.0, g)
            tl.store(logits_ptr + start + cols, (g * inv_n).to(logits_ptr.dtype.element_ty), mask=mask)


class FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, ignore_index, label_smoothing, chunk_size, with_grad):
        N, H = hidden.shape
        V = weight.shape[0]
        hidden = hidden if hidden.stride(-1) == 1 else hidden.contiguous()
        targets = targets.contiguous()
        want_gh = with_grad and ctx.needs_input_grad[0]
        want_gw = with_grad and ctx.needs_input_grad[1]
        n_valid = (targets != ignore_index).sum().clamp_(min=1).to(torch.float32)
        loss_rows = torch.empty(N, dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if want_gh else None
        grad_weight = torch.zeros_like(weight) if want_gw else None
        for start in range(0, N, chunk_size):
            rows = slice(start, start + chunk_size)
            h = hidden[rows]
            logits = h @ weight.t()  # (chunk, V) in the input dtype; the kernel upcasts
            _ce_loss_and_grad[(h.shape[0],)](
                logits, logits.stride(0), targets[rows], loss_rows[rows], n_valid, V, ignore_index,
                label_smoothing, HAS_SMOOTHING=label_smoothing > 0, WITH_GRAD=want_gh or want_gw,
                BLOCK_V=BLOCK_V, num_warps=NUM_WARPS)
            if want_gh:
                torch.matmul(logits, weight, out=grad_hidden[rows])
            if want_gw:
                grad_weight.addmm_(logits.t(), h)
        ctx.save_for_backward(grad_hidden, grad_weight)
        return loss_rows.sum() / n_valid  # fp32 whatever the input dtype, as Liger returns it

    @staticmethod
    def backward(ctx, grad_out):
        grad_hidden, grad_weight = ctx.saved_tensors
        # The gradients are ours alone (made in forward), so scale them in place.
        if grad_hidden is not None:
            grad_hidden.mul_(grad_out.to(grad_hidden.dtype))
        if grad_weight is not None:
            grad_weight.mul_(grad_out.to(grad_weight.dtype))
        return grad_hidden, grad_weight, None, None, None, None, None


def linear_cross_entropy(hidden, weight, targets, ignore_index: int = -100,
                         label_smoothing: float = 0.0, chunk_size: int = 4096):
    with_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    return FusedLinearCrossEntropy.apply(hidden, weight, targets, int(ignore_index),
                                         float(label_smoothing), int(chunk_size), with_grad)


def compile_specs(dtype: torch.dtype, capability: int, **_):
    sig = {"logits_ptr": "*" + TRITON_DTYPE[dtype], "stride": "i32", "targets_ptr": "*i64",
           "loss_ptr": "*fp32", "n_valid_ptr": "*fp32", "V": "i32", "ignore_index": "i32", "eps": "fp32"}
    return [CompileSpec(f"linear_ce_{'smooth' if smooth else 'plain'}", _ce_loss_and_grad, sig,
                        {"HAS_SMOOTHING": smooth, "WITH_GRAD": True, "BLOCK_V": GPU_BLOCK_V},
                        8, 1, aligned=(0, 2, 3, 4))
            for smooth in (False, True)]
