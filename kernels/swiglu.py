"""SwiGLU activation, silu(gate) * up, fused into one elementwise pass each way.

The backward recomputes silu from the saved inputs rather than storing the activation
(Liger-Kernel does the same): one read of gate and up is cheaper than a stored tensor.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import INTERPRET, TRITON_DTYPE, CompileSpec

GPU_BLOCK = 1024
BLOCK = 16384 if INTERPRET else GPU_BLOCK
NUM_WARPS = 4


@triton.jit
def _swiglu_fwd(gate_ptr, up_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    a = tl.load(gate_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(up_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    silu = a * tl.sigmoid(a)
    tl.store(out_ptr + offs, (silu * b).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _swiglu_bwd(gate_ptr, up_ptr, dout_ptr, dgate_ptr, dup_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    a = tl.load(gate_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(up_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    dc = tl.load(dout_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    sig = tl.sigmoid(a)
    silu = a * sig
    # d silu / da = sig * (1 + a * (1 - sig))
    da = dc * b * sig * (1.0 + a * (1.0 - sig))
    tl.store(dgate_ptr + offs, da.to(dgate_ptr.dtype.element_ty), mask=mask)
    tl.store(dup_ptr + offs, (dc * silu).to(dup_ptr.dtype.element_ty), mask=mask)


class SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate, up):
        if gate.shape != up.shape:
            raise ValueError(f"gate {tuple(gate.shape)} and up {tuple(up.shape)} must have the same shape")
        gate, up = gate.contiguous(), up.contiguous()
        out = torch.empty_like(gate)
        n = gate.numel()
        _swiglu_fwd[(triton.cdiv(n, BLOCK),)](gate, up, out, n, BLOCK=BLOCK, num_warps=NUM_WARPS)
        ctx.save_for_backward(gate, up)
        return out

    @staticmethod
    def backward(ctx, dout):
        gate, up = ctx.saved_tensors
        dout = dout.contiguous()
        dgate, dup = torch.empty_like(gate), torch.empty_like(up)
        n = gate.numel()
        _swiglu_bwd[(triton.cdiv(n, BLOCK),)](gate, up, dout, dgate, dup, n, BLOCK=BLOCK,
                                              num_warps=NUM_WARPS)
        return dgate, dup


def swiglu(gate, up):
    return SwiGLU.apply(gate, up)


def compile_specs(dtype: torch.dtype, capability: int, **_):
    t = "*" + TRITON_DTYPE[dtype]
    return [
        CompileSpec("swiglu_fwd", _swiglu_fwd, {"gate_ptr": t, "up_ptr": t, "out_ptr": t, "n": "i32"},
                    {"BLOCK": GPU_BLOCK}, NUM_WARPS, 1, divisible=("n",)),
        CompileSpec("swiglu_bwd", _swiglu_bwd, {"gate_ptr": t, "up_ptr": t, "dout_ptr": t, "dgate_ptr": t,
                                                "dup_ptr": t, "n": "i32"},
                    {"BLOCK": GPU_BLOCK}, NUM_WARPS, 1, divisible=("n",)),
    ]
