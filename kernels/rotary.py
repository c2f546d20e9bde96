"""Rotary position embedding (Hugging Face Llama ``rotate_half`` convention), in place.

out[..., :D/2] = x1*cos - x2*sin,  out[..., D/2:] = x2*cos + x1*sin,  x1, x2 = halves of x.

The forward rotates q and k in the tensors it is given (no copy of the activations, as in
Liger-Kernel), so callers must treat their q and k as consumed. Leaf tensors that require
grad cannot be modified in place and are copied first. The backward is the inverse
rotation (sin -> -sin) written into fresh gradient tensors, never into the incoming ones,
which autograd may share with other consumers.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import INTERPRET, TRITON_DTYPE, CompileSpec, next_pow2

# Tokens per program: the GPU wants many small programs; the interpreter wants few large ones.
GPU_BLOCK_T = 16
BLOCK_T = 128 if INTERPRET else GPU_BLOCK_T


@triton.jit
def _rotary(x_ptr, out_ptr, cos_ptr, sin_ptr, H, T, half,
            xs_b, xs_h, xs_t, os_b, os_h, os_t,
            INVERSE: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_HALF: tl.constexpr):
    # program (t-block, b*h): a (BLOCK_T, D/2) tile of both halves of one head.
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    cols = tl.arange(0, BLOCK_HALF)
    mask = (t[:, None] < T) & (cols[None, :] < half)
    cs = t[:, None] * half + cols[None, :]
    c = tl.load(cos_ptr + cs, mask=mask, other=0.0).to(tl.float32)
    s = tl.load(sin_ptr + cs, mask=mask, other=0.0).to(tl.float32)
    if INVERSE:
        s = -s
    src = x_ptr + b * xs_b + h * xs_h + t[:, None].to(tl.int64) * xs_t + cols[None, :]
    dst = out_ptr + b * os_b + h * os_h + t[:, None].to(tl.int64) * os_t + cols[None, :]
    x1 = tl.load(src, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(src + half, mask=mask, other=0.0).to(tl.float32)
    tl.store(dst, (x1 * c - x2 * s).to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(dst + half, (x2 * c + x1 * s).to(out_ptr.dtype.element_ty), mask=mask)


def _rotate(x, out, cos, sin, inverse: bool):
    B, H, T, D = x.shape
    half = D // 2
    grid = (triton.cdiv(T, BLOCK_T), B * H)
    _rotary[grid](x, out, cos, sin, H, T, half,
                  x.stride(0), x.stride(1), x.stride(2), out.stride(0), out.stride(1), out.stride(2),
                  INVERSE=inverse, BLOCK_T=BLOCK_T, BLOCK_HALF=next_pow2(half), num_warps=4)


def _check(q, k, cos, sin):
    if q.dim() != 4 or k.dim() != 4 or q.shape[-1] != k.shape[-1] or q.shape[2] != k.shape[2]:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} must be (B, H, T, D) with equal T, D")
    T, D = q.shape[2], q.shape[3]
    if D % 2 or cos.shape != (T, D // 2) or sin.shape != (T, D // 2):
        raise ValueError(f"cos {tuple(cos.shape)} and sin {tuple(sin.shape)} must be ({T}, {D // 2})")


class Rotary(torch.autograd.Function):
    # One tensor per Function: autograd only lets a Function that returns a single tensor
    # modify a view (q and k usually are views of the fused qkv projection) in place.
    @staticmethod
    def forward(ctx, x, cos, sin):
        _rotate(x, x, cos, sin, inverse=False)
        ctx.mark_dirty(x)
        ctx.save_for_backward(cos, sin)
        return x

    @staticmethod
    def backward(ctx, grad):
        cos, sin = ctx.saved_tensors
        grad = grad if grad.stride(-1) == 1 else grad.contiguous()
        out = torch.empty_like(grad, memory_format=torch.contiguous_format)
        _rotate(grad, out, cos, sin, inverse=True)
        return out, None, None


def _writable(x):
    # In place needs a unit stride on D, and must not modify a leaf that autograd tracks.
    if x.is_leaf and x.requires_grad:
        return x.clone()
    return x if x.stride(-1) == 1 else x.contiguous()


def apply_rotary(q, k, cos, sin):
    _check(q, k, cos, sin)
    cos, sin = cos.contiguous(), sin.contiguous()
    return Rotary.apply(_writable(q), cos, sin), Rotary.apply(_writable(k), cos, sin)


def compile_specs(dtype: torch.dtype, capability: int, head_dim: int = 128, **_):
    t = "*" + TRITON_DTYPE[dtype]
    sig = {"x_ptr": t, "out_ptr": t, "cos_ptr": "*fp32", "sin_ptr": "*fp32", "H": "i32", "T": "i32",
           "half": "i32", "xs_b": "i32", "xs_h": "i32", "xs_t": "i32", "os_b": "i32", "os_h": "i32",
           "os_t": "i32"}
    return [CompileSpec(f"rotary_{'bwd' if inv else 'fwd'}", _rotary, sig,
                        {"INVERSE": inv, "BLOCK_T": GPU_BLOCK_T, "BLOCK_HALF": next_pow2(head_dim // 2)}, 4, 1,
                        divisible=[k for k in sig if k[1:2] == "s"] + ["half"])
            for inv in (False, True)]
