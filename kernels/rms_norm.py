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


def _tile_rows(block_d: int) -> int:
    """Rows per tile: narrow rows (q/k-norm over a 64-wide head) share a program. The
    interpreter pays per program and per loop step in Python, so it takes bigger tiles."""
    budget = 16384 if INTERPRET else 2048
    return max(1, min(budget // block_d, 256 if INTERPRET else 16))


@triton.jit
def _rms_norm_fwd(x_ptr, w_ptr, y_ptr, rstd_ptr, x_stride, y_stride, n_rows, D, eps,
                  ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_D)
    mask = (rows[:, None] < n_rows) & (cols[None, :] < D)
    x = tl.load(x_ptr + rows[:, None] * x_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=cols < D, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=1) / D + eps)
    tl.store(rstd_ptr + rows, rstd, mask=rows < n_rows)
    y = x * rstd[:, None] * w[None, :]
    tl.store(y_ptr + rows[:, None] * y_stride + cols[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _rms_norm_bwd(dy_ptr, x_ptr, w_ptr, rstd_ptr, dx_ptr, dw_part_ptr,
                  dy_stride, x_stride, dx_stride, n_rows, D, rows_per_program,
                  ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    # Program pid owns rows [first, first + rows_per_program), in tiles of ROWS rows.
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_D)
    col_ok = cols < D
    w = tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    dw = tl.zeros((BLOCK_D,), dtype=tl.float32)
    first = pid.to(tl.int64) * rows_per_program
    last = tl.minimum(first + rows_per_program, n_rows)
    for start in range(first, last, ROWS):
        rows = start + tl.arange(0, ROWS)
        mask = (rows[:, None] < last) & col_ok[None, :]
        x = tl.load(x_ptr + rows[:, None] * x_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + rows[:, None] * dy_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(rstd_ptr + rows, mask=rows < last, other=0.0)
        x_hat = x * rstd[:, None]
        wdy = w[None, :] * dy
        # dx = rstd * (w*dy - x_hat * mean(x_hat * w*dy)); masked rows have x = dy = 0.
        dx = rstd[:, None] * (wdy - x_hat * (tl.sum(x_hat * wdy, axis=1) / D)[:, None])
        tl.store(dx_ptr + rows[:, None] * dx_stride + cols[None, :], dx.to(dx_ptr.dtype.element_ty), mask=mask)
        dw += tl.sum(dy * x_hat, axis=0)
    tl.store(dw_part_ptr + pid * BLOCK_D + cols, dw, mask=col_ok)


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
        rows = _tile_rows(block_d)
        _rms_norm_fwd[(triton.cdiv(n_rows, rows),)](x2, weight, y, rstd, x2.stride(0), D, n_rows, D, eps,
                                                    ROWS=rows, BLOCK_D=block_d, num_warps=_num_warps(block_d))
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
        rows = _tile_rows(block_d)
        programs = row_programs(triton.cdiv(n_rows, rows), x2.device)
        rows_per_program = triton.cdiv(n_rows, programs)
        dw_part = torch.empty((programs, block_d), dtype=torch.float32, device=x2.device)
        _rms_norm_bwd[(programs,)](dy2, x2, weight, rstd, dx, dw_part, dy2.stride(0), x2.stride(0),
                                   D, n_rows, D, rows_per_program,
                                   ROWS=rows, BLOCK_D=block_d, num_warps=_num_warps(block_d))
        dw = dw_part[:, :D].sum(0).to(weight.dtype)
        return dx, dw, None


def rms_norm(x, weight, eps: float = 1e-6):
    return RMSNorm.apply(x, weight, float(eps))


def compile_specs(dtype: torch.dtype, capability: int, hidden: int = 4096, **_):
    t = "*" + TRITON_DTYPE[dtype]
    block_d = next_pow2(hidden)
    rows = max(1, min(2048 // block_d, 16))  # _tile_rows on a GPU
    return [
        CompileSpec("rms_norm_fwd", _rms_norm_fwd,
                    {"x_ptr": t, "w_ptr": t, "y_ptr": t, "rstd_ptr": "*fp32", "x_stride": "i32",
                     "y_stride": "i32", "n_rows": "i32", "D": "i32", "eps": "fp32"},
                    {"ROWS": rows, "BLOCK_D": block_d}, _num_warps(block_d), 1,
                    divisible=("x_stride", "y_stride", "D")),
        CompileSpec("rms_norm_bwd", _rms_norm_bwd,
                    {"dy_ptr": t, "x_ptr": t, "w_ptr": t, "rstd_ptr": "*fp32", "dx_ptr": t,
                     "dw_part_ptr": "*fp32", "dy_stride": "i32", "x_stride": "i32", "dx_stride": "i32",
                     "n_rows": "i32", "D": "i32", "rows_per_program": "i32"},
                    {"ROWS": rows, "BLOCK_D": block_d}, _num_warps(block_d), 1,
                    divisible=("dy_stride", "x_stride", "dx_stride", "D")),
    ]
