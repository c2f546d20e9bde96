"""RMSNorm, y = x / sqrt(mean(x^2) + eps) * w, in fp32 whatever the input dtype.

Forward saves the per-row 1/rms (4 bytes a row) so the backward need not recompute the
reduction. Backward fuses the weight gradient the way Liger-Kernel does: a fixed number of
programs each walk a stripe of rows, keep their share of dw in registers (fp32) and write
one partial row; summing those few partials in PyTorch replaces a (rows, D) temporary.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import INTERPRET, TRITON_DTYPE, CompileSpec, as_rows, next_pow2, row_programs


def _num_warps(block_d: int) -> int:
    return 4 if block_d <= 1024 else 8 if block_d <= 4096 else 16


@triton.jit
def _rms_norm_fwd(x_ptr, w_ptr, y_ptr, rstd_ptr, x_stride, y_stride, D, eps,
                  BLOCK_D: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_D)
    mask = cols < D
    x = tl.load(x_ptr + row * x_stride + cols, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / D + eps)
    tl.store(rstd_ptr + row, rstd)
    tl.store(y_ptr + row * y_stride + cols, (x * rstd * w).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _rms_norm_bwd(dy_ptr, x_ptr, w_ptr, rstd_ptr, dx_ptr, dw_part_ptr,
                  dy_stride, x_stride, dx_stride, n_rows, D, rows_per_program,
                  BLOCK_D: tl.constexpr):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_D)
    mask = cols < D
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    dw = tl.zeros((BLOCK_D,), dtype=tl.float32)
    first = pid.to(tl.int64) * rows_per_program
    last = tl.minimum(first + rows_per_program, n_rows)
    # Walk pointers rather than index with the loop variable: 64-bit offsets, no int32 overflow.
    x_ptr += first * x_stride
    dy_ptr += first * dy_stride
    dx_ptr += first * dx_stride
    for row in range(first, last):
        x = tl.load(x_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(rstd_ptr + row)
        x_hat = x * rstd
        wdy = w * dy
        # dx = rstd * (w*dy - x_hat * mean(x_hat * w*dy))
        dx = rstd * (wdy - x_hat * (tl.sum(x_hat * wdy, axis=0) / D))
        tl.store(dx_ptr + cols, dx.to(dx_ptr.dtype.element_ty), mask=mask)
        dw += dy * x_hat
        x_ptr += x_stride
        dy_ptr += dy_stride
        dx_ptr += dx_stride
    tl.store(dw_part_ptr + pid * BLOCK_D + cols, dw, mask=mask)


class RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        shape = x.shape
        x2 = as_rows(x)
        n_rows, D = x2.shape
        if weight.shape != (D,):
            raise ValueError(f"weight {tuple(weight.shape)} must be ({D},) to match x {tuple(shape)}")
        # Return the allocated tensor itself, not a view of it: autograd forbids in-place ops
        # (the rotary kernel) on views created inside a custom Function.
        y = torch.empty(shape, dtype=x.dtype, device=x.device)
        rstd = torch.empty(n_rows, dtype=torch.float32, device=x.device)
        block_d = next_pow2(D)
        weight = weight.contiguous()
        _rms_norm_fwd[(n_rows,)](x2, weight, y, rstd, x2.stride(0), D, D, eps,
                                 BLOCK_D=block_d, num_warps=_num_warps(block_d))
        ctx.save_for_backward(x2, weight, rstd)
        ctx.shape = shape
        return y

    @staticmethod
    def backward(ctx, dy):
        x2, weight, rstd = ctx.saved_tensors
        n_rows, D = x2.shape
        dy2 = as_rows(dy)
        dx = torch.empty(ctx.shape, dtype=x2.dtype, device=x2.device)
        block_d = next_pow2(D)
        programs = row_programs(n_rows, x2.device)
        rows_per_program = triton.cdiv(n_rows, programs)
        dw_part = torch.empty((programs, block_d), dtype=torch.float32, device=x2.device)
        _rms_norm_bwd[(programs,)](dy2, x2, weight, rstd, dx, dw_part, dy2.stride(0), x2.stride(0),
                                   D, n_rows, D, rows_per_program,
                                   BLOCK_D=block_d, num_warps=_num_warps(block_d))
        dw = dw_part[:, :D].sum(0).to(weight.dtype)
        return dx, dw, None


def rms_norm(x, weight, eps: float = 1e-6):
    return RMSNorm.apply(x, weight, float(eps))


def compile_specs(dtype: torch.dtype, capability: int, hidden: int = 4096, **_):
    t = "*" + TRITON_DTYPE[dtype]
    block_d = next_pow2(hidden)
    return [
        CompileSpec("rms_norm_fwd", _rms_norm_fwd,
                    {"x_ptr": t, "w_ptr": t, "y_ptr": t, "rstd_ptr": "*fp32", "x_stride": "i32",
                     "y_stride": "i32", "D": "i32", "eps": "fp32"},
                    {"BLOCK_D": block_d}, _num_warps(block_d), 1, aligned=(0, 1, 2, 3)),
        CompileSpec("rms_norm_bwd", _rms_norm_bwd,
                    {"dy_ptr": t, "x_ptr": t, "w_ptr": t, "rstd_ptr": "*fp32", "dx_ptr": t,
                     "dw_part_ptr": "*fp32", "dy_stride": "i32", "x_stride": "i32", "dx_stride": "i32",
                     "n_rows": "i32", "D": "i32", "rows_per_program": "i32"},
                    {"BLOCK_D": block_d}, _num_warps(block_d), 1, aligned=(0, 1, 2, 3, 4, 5)),
    ]
