"""Flash attention (FA2-style) forward and backward: causal, grouped-query, prefix-decoder.

Forward: each program owns BLOCK_M query rows of one head and streams key/value blocks,
keeping a running max and sum (online softmax) so the (T, T) scores never exist. It saves
the per-row log-sum-exp, which is all the backward needs to rebuild the probabilities.

Backward, two kernels and no atomics (as in FA2 and the Triton tutorial): one program per
key/value block accumulates dK, dV over every query head of its group (GQA) and every query
block that can see it; another program per query block accumulates dQ. Scores are
recomputed in both, which costs FLOPs but no memory and no atomics.

Masks: causal, plus an optional per-batch prefix length p: rows and columns < p see each
other (bidirectional prefix, PaLM/GLM prefix-LM). Blocks strictly below the diagonal need
no mask and take the cheap loop; only diagonal/prefix/tail blocks pay for the mask.
Exponentials are base 2 (exp2 is one instruction) with log2(e) folded into the scale.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ._common import INTERPRET, TRITON_DTYPE, CompileSpec

LOG2E = 1.4426950408889634


# ----------------------------------------------------------------------------- configs

# Fixed per (head dim, dtype, arch) rather than autotuned: autotuning needs a driver (not in the
# interpreter), re-benchmarks every new sequence length mid-training, and only fixed configs can
# be compiled for sm_80/sm_90 in CI and checked against shared memory (tests/kernels). Values
# start from the Triton tutorial's; they are untimed here (no GPU) - benchmarks/kernels.py is
# where to tune them.

def fwd_config(head_dim: int, dtype: torch.dtype, capability: int = 90):
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) of the forward."""
    if INTERPRET:
        return 64, 64, 4, 1
    if dtype == torch.float32:
        return 64, 32, 4, 2
    return (128, 64, 4, 3) if head_dim <= 64 else (128, 64, 8, 3 if capability >= 90 else 2)


def bwd_config(head_dim: int, dtype: torch.dtype, capability: int = 90):
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) of the backward.

    dK/dV programs own BLOCK_N keys (k, v, dk, dv stay in registers) and stream BLOCK_M query
    rows; the dQ kernel swaps the two, owning BLOCK_N query rows and streaming BLOCK_M keys.
    """
    if INTERPRET:
        return 64, 64, 4, 1
    if dtype == torch.float32:
        return 32, 32, 4, 2
    return (32, 128, 4, 3) if head_dim <= 64 else (32, 64, 4, 2)


# ----------------------------------------------------------------------------- masks

@triton.jit
def _visible(rows, cols, T, prefix, CAUSAL: tl.constexpr, HAS_PREFIX: tl.constexpr):
    """(rows x cols) boolean: may query row attend to key col."""
    ok = cols[None, :] < T
    if CAUSAL:
        seen = cols[None, :] <= rows[:, None]
        if HAS_PREFIX:
            seen = seen | ((cols[None, :] < prefix) & (rows[:, None] < prefix))
        ok = ok & seen
    return ok


@triton.jit
def _kv_range(start_m, T, prefix, CAUSAL: tl.constexpr, HAS_PREFIX: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Key blocks for query block start_m: [0, mid) need no mask, [mid, hi) do."""
    if CAUSAL:
        mid = start_m  # a multiple of BLOCK_N because BLOCK_M % BLOCK_N == 0
        hi = tl.minimum(start_m + BLOCK_M, T)
        if HAS_PREFIX:  # query rows inside the prefix also see the rest of the prefix
            hi = tl.where(start_m < prefix, tl.maximum(hi, tl.minimum(prefix, T)), hi)
    else:
        mid = (T // BLOCK_N) * BLOCK_N
        hi = T
    return mid, hi


# ----------------------------------------------------------------------------- forward

@triton.jit
def _fwd_block(acc, l_i, m_i, q, k_ptr, v_ptr, skt, svt, rows, offs_n, offs_d, lo, hi, T, prefix,
               qk_scale, MASKED: tl.constexpr, CAUSAL: tl.constexpr, HAS_PREFIX: tl.constexpr,
               BLOCK_N: tl.constexpr, DOT: tl.constexpr):
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        if MASKED:
            kT = tl.load(k_ptr + cols[None, :] * skt + offs_d[:, None], mask=cols[None, :] < T, other=0.0)
        else:
            kT = tl.load(k_ptr + cols[None, :] * skt + offs_d[:, None])
        s = tl.dot(q, kT, input_precision=DOT) * qk_scale
        if MASKED:
            s = tl.where(_visible(rows, cols, T, prefix, CAUSAL, HAS_PREFIX), s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        if MASKED:
            v = tl.load(v_ptr + cols[:, None] * svt + offs_d[None, :], mask=cols[:, None] < T, other=0.0)
        else:
            v = tl.load(v_ptr + cols[:, None] * svt + offs_d[None, :])
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=DOT)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _attn_fwd(q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr, prefix_ptr,
              sqb, sqh, sqt, skb, skh, skt, svb, svh, svt,
              H, GROUP, T, qk_scale,
              CAUSAL: tl.constexpr, HAS_PREFIX: tl.constexpr, HEAD_DIM: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DOT: tl.constexpr):
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    hk = h // GROUP
    prefix = tl.load(prefix_ptr + b) if HAS_PREFIX else 0
    rows = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(q_ptr + b * sqb + h * sqh + rows[:, None] * sqt + offs_d[None, :],
                mask=rows[:, None] < T, other=0.0)
    k_ptr += b * skb + hk * skh
    v_ptr += b * svb + hk * svh
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, HEAD_DIM), tl.float32)
    mid, hi = _kv_range(start_m, T, prefix, CAUSAL, HAS_PREFIX, BLOCK_M, BLOCK_N)
    acc, l_i, m_i = _fwd_block(acc, l_i, m_i, q, k_ptr, v_ptr, skt, svt, rows, offs_n, offs_d,
                               0, mid, T, prefix, qk_scale, False, CAUSAL, HAS_PREFIX, BLOCK_N, DOT)
    acc, l_i, m_i = _fwd_block(acc, l_i, m_i, q, k_ptr, v_ptr, skt, svt, rows, offs_n, offs_d,
                               mid, hi, T, prefix, qk_scale, True, CAUSAL, HAS_PREFIX, BLOCK_N, DOT)
    acc = acc / l_i[:, None]
    # o and lse are ours, contiguous: (B, H, T, D) and (B, H, T).
    row_ok = rows < T
    tl.store(lse_ptr + bh.to(tl.int64) * T + rows, (m_i + tl.log2(l_i)) / 1.4426950408889634, mask=row_ok)
    tl.store(o_ptr + bh.to(tl.int64) * T * HEAD_DIM + rows[:, None] * HEAD_DIM + offs_d[None, :],
             acc.to(o_ptr.dtype.element_ty), mask=row_ok[:, None])


# ----------------------------------------------------------------------------- backward

@triton.jit
def _attn_bwd_delta(o_ptr, do_ptr, delta_ptr, sdb, sdh, sdt, H, T,
                    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
    # delta_i = sum_d o_id * do_id = sum_j p_ij dp_ij: the softmax-backward row term.
    bh = tl.program_id(1)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    mask = rows[:, None] < T
    o = tl.load(o_ptr + bh.to(tl.int64) * T * HEAD_DIM + rows[:, None] * HEAD_DIM + offs_d[None, :],
                mask=mask, other=0.0).to(tl.float32)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    do = tl.load(do_ptr + b * sdb + h * sdh + rows[:, None] * sdt + offs_d[None, :],
                 mask=mask, other=0.0).to(tl.float32)
    tl.store(delta_ptr + bh.to(tl.int64) * T + rows, tl.sum(o * do, 1), mask=rows < T)


@triton.jit
def _dkdv_block(dk, dv, k, v, q_ptr, do_ptr, lse_ptr, delta_ptr, sqt, sdt, cols, offs_m, offs_d,
                lo, hi, T, prefix, qk_scale, MASKED: tl.constexpr, CAUSAL: tl.constexpr,
                HAS_PREFIX: tl.constexpr, BLOCK_M: tl.constexpr, DOT: tl.constexpr):
    for start_m in range(lo, hi, BLOCK_M):
        rows = start_m + offs_m
        row_ok = rows < T
        qT = tl.load(q_ptr + rows[None, :] * sqt + offs_d[:, None], mask=row_ok[None, :], other=0.0)
        do = tl.load(do_ptr + rows[:, None] * sdt + offs_d[None, :], mask=row_ok[:, None], other=0.0)
        lse = tl.load(lse_ptr + rows, mask=row_ok, other=0.0) * 1.4426950408889634
        delta = tl.load(delta_ptr + rows, mask=row_ok, other=0.0)
        # Transposed scores (keys x queries) so the reductions run over this program's keys.
        pT = tl.exp2(tl.dot(k, qT, input_precision=DOT) * qk_scale - lse[None, :])
        if MASKED:
            seen = tl.trans(_visible(rows, cols, T, prefix, CAUSAL, HAS_PREFIX))
            pT = tl.where(seen, pT, 0.0)
        # Padded query rows (>= T) load q = do = 0, lse = delta = 0: their terms vanish.
        dv = tl.dot(pT.to(do.dtype), do, dv, input_precision=DOT)
        dpT = tl.dot(v, tl.trans(do), input_precision=DOT)
        dsT = pT * (dpT - delta[None, :])
        dk = tl.dot(dsT.to(qT.dtype), tl.trans(qT), dk, input_precision=DOT)
    return dk, dv


@triton.jit
def _attn_bwd_dkdv(q_ptr, k_ptr, v_ptr, do_ptr, dk_ptr, dv_ptr, lse_ptr, delta_ptr, prefix_ptr,
                   sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sdb, sdh, sdt,
                   H, GROUP, T, sm_scale, qk_scale,
                   CAUSAL: tl.constexpr, HAS_PREFIX: tl.constexpr, HEAD_DIM: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DOT: tl.constexpr):
    start_n = tl.program_id(0) * BLOCK_N
    bhk = tl.program_id(1)
    HK = H // GROUP
    b = (bhk // HK).to(tl.int64)
    hk = (bhk % HK).to(tl.int64)
    prefix = tl.load(prefix_ptr + b) if HAS_PREFIX else 0
    cols = start_n + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    col_ok = cols[:, None] < T
    k = tl.load(k_ptr + b * skb + hk * skh + cols[:, None] * skt + offs_d[None, :], mask=col_ok, other=0.0)
    v = tl.load(v_ptr + b * svb + hk * svh + cols[:, None] * svt + offs_d[None, :], mask=col_ok, other=0.0)
    dk = tl.zeros((BLOCK_N, HEAD_DIM), tl.float32)
    dv = tl.zeros((BLOCK_N, HEAD_DIM), tl.float32)
    # Query blocks that see these keys: causal -> from the diagonal down (and from row 0
    # when the keys lie in a prefix); those overlapping the diagonal need the mask.
    if CAUSAL:
        lo = (start_n // BLOCK_M) * BLOCK_M
        if HAS_PREFIX:
            lo = tl.where(start_n < prefix, 0, lo)
        mid = tl.minimum(tl.cdiv(start_n + BLOCK_N, BLOCK_M) * BLOCK_M, T)
    else:
        lo = 0
        mid = 0
    for g in range(GROUP):
        h = hk * GROUP + g
        bh = b * H + h
        q_base = q_ptr + b * sqb + h * sqh
        do_base = do_ptr + b * sdb + h * sdh
        lse_base = lse_ptr + bh * T
        delta_base = delta_ptr + bh * T
        dk, dv = _dkdv_block(dk, dv, k, v, q_base, do_base, lse_base, delta_base, sqt, sdt, cols,
                             offs_m, offs_d, lo, mid, T, prefix, qk_scale, True, CAUSAL, HAS_PREFIX,
                             BLOCK_M, DOT)
        dk, dv = _dkdv_block(dk, dv, k, v, q_base, do_base, lse_base, delta_base, sqt, sdt, cols,
                             offs_m, offs_d, mid, T, T, prefix, qk_scale, False, CAUSAL, HAS_PREFIX,
                             BLOCK_M, DOT)
    # dk, dv are ours, contiguous (B, HK, T, D); the padded key rows are not stored.
    out = bhk.to(tl.int64) * T * HEAD_DIM + cols[:, None] * HEAD_DIM + offs_d[None, :]
    tl.store(dk_ptr + out, (dk * sm_scale).to(dk_ptr.dtype.element_ty), mask=col_ok)
    tl.store(dv_ptr + out, dv.to(dv_ptr.dtype.element_ty), mask=col_ok)


@triton.jit
def _dq_block(dq, q, do, lse, delta, k_ptr, v_ptr, skt, svt, rows, offs_n, offs_d, lo, hi, T,
              prefix, qk_scale, MASKED: tl.constexpr, CAUSAL: tl.constexpr,
              HAS_PREFIX: tl.constexpr, BLOCK_N: tl.constexpr, DOT: tl.constexpr):
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        if MASKED:
            kT = tl.load(k_ptr + cols[None, :] * skt + offs_d[:, None], mask=cols[None, :] < T, other=0.0)
            vT = tl.load(v_ptr + cols[None, :] * svt + offs_d[:, None], mask=cols[None, :] < T, other=0.0)
        else:
            kT = tl.load(k_ptr + cols[None, :] * skt + offs_d[:, None])
            vT = tl.load(v_ptr + cols[None, :] * svt + offs_d[:, None])
        p = tl.exp2(tl.dot(q, kT, input_precision=DOT) * qk_scale - lse[:, None])
        if MASKED:
            p = tl.where(_visible(rows, cols, T, prefix, CAUSAL, HAS_PREFIX), p, 0.0)
        ds = p * (tl.dot(do, vT, input_precision=DOT) - delta[:, None])
        dq = tl.dot(ds.to(kT.dtype), tl.trans(kT), dq, input_precision=DOT)
    return dq


@triton.jit
def _attn_bwd_dq(q_ptr, k_ptr, v_ptr, do_ptr, dq_ptr, lse_ptr, delta_ptr, prefix_ptr,
                 sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sdb, sdh, sdt,
                 H, GROUP, T, sm_scale, qk_scale,
                 CAUSAL: tl.constexpr, HAS_PREFIX: tl.constexpr, HEAD_DIM: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DOT: tl.constexpr):
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    hk = h // GROUP
    prefix = tl.load(prefix_ptr + b) if HAS_PREFIX else 0
    rows = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = rows < T
    q = tl.load(q_ptr + b * sqb + h * sqh + rows[:, None] * sqt + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    do = tl.load(do_ptr + b * sdb + h * sdh + rows[:, None] * sdt + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    lse = tl.load(lse_ptr + bh.to(tl.int64) * T + rows, mask=row_ok, other=0.0) * 1.4426950408889634
    delta = tl.load(delta_ptr + bh.to(tl.int64) * T + rows, mask=row_ok, other=0.0)
    k_ptr += b * skb + hk * skh
    v_ptr += b * svb + hk * svh
    dq = tl.zeros((BLOCK_M, HEAD_DIM), tl.float32)
    mid, hi = _kv_range(start_m, T, prefix, CAUSAL, HAS_PREFIX, BLOCK_M, BLOCK_N)
    dq = _dq_block(dq, q, do, lse, delta, k_ptr, v_ptr, skt, svt, rows, offs_n, offs_d, 0, mid, T,
                   prefix, qk_scale, False, CAUSAL, HAS_PREFIX, BLOCK_N, DOT)
    dq = _dq_block(dq, q, do, lse, delta, k_ptr, v_ptr, skt, svt, rows, offs_n, offs_d, mid, hi, T,
                   prefix, qk_scale, True, CAUSAL, HAS_PREFIX, BLOCK_N, DOT)
    tl.store(dq_ptr + bh.to(tl.int64) * T * HEAD_DIM + rows[:, None] * HEAD_DIM + offs_d[None, :],
             (dq * sm_scale).to(dq_ptr.dtype.element_ty), mask=row_ok[:, None])


# ----------------------------------------------------------------------------- autograd

def _dot_precision(dtype: torch.dtype) -> dict:
    # fp32 inputs: 3xTF32 tensor-core dots, near-fp32 accuracy (plain TF32 keeps 10 mantissa
    # bits, so "fp32" attention would be barely better than fp16). 16-bit inputs ignore it.
    # (A constexpr, not the `default_dot_input_precision` option: tl.dot ignores that one.)
    return {"DOT": "tf32x3" if dtype == torch.float32 else "tf32"}


def _strides(x):
    return x.stride(0), x.stride(1), x.stride(2)


def _capability(device) -> int:
    if device.type != "cuda":
        return 90
    major, minor = torch.cuda.get_device_capability(device)
    return major * 10 + minor


class FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, prefix, scale):
        B, H, T, D = q.shape
        group = H // k.shape[1]
        cap = _capability(q.device)
        block_m, block_n, warps, stages = fwd_config(D, q.dtype, cap)
        o = torch.empty((B, H, T, D), dtype=q.dtype, device=q.device)
        lse = torch.empty((B, H, T), dtype=torch.float32, device=q.device)
        has_prefix = prefix is not None
        prefix_t = prefix if has_prefix else lse  # never read without HAS_PREFIX
        _attn_fwd[(triton.cdiv(T, block_m), B * H)](
            q, k, v, o, lse, prefix_t, *_strides(q), *_strides(k), *_strides(v), H, group, T,
            scale * LOG2E, CAUSAL=causal, HAS_PREFIX=has_prefix, HEAD_DIM=D,
            BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps, num_stages=stages,
            **_dot_precision(q.dtype))
        ctx.save_for_backward(q, k, v, o, lse, prefix_t)
        ctx.causal, ctx.has_prefix, ctx.scale = causal, has_prefix, scale
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse, prefix_t = ctx.saved_tensors
        B, H, T, D = q.shape
        Hk = k.shape[1]
        do = do if do.stride(-1) == 1 else do.contiguous()
        cap = _capability(q.device)
        block_m, block_n, warps, stages = bwd_config(D, q.dtype, cap)
        delta = torch.empty_like(lse)
        _attn_bwd_delta[(triton.cdiv(T, 64), B * H)](o, do, delta, *_strides(do), H, T,
                                                     HEAD_DIM=D, BLOCK_M=64)
        dq = torch.empty((B, H, T, D), dtype=q.dtype, device=q.device)
        dk = torch.empty((B, Hk, T, D), dtype=k.dtype, device=q.device)
        dv = torch.empty((B, Hk, T, D), dtype=v.dtype, device=q.device)
        common = dict(CAUSAL=ctx.causal, HAS_PREFIX=ctx.has_prefix, HEAD_DIM=D,
                      num_warps=warps, num_stages=stages, **_dot_precision(q.dtype))
        args = (*_strides(q), *_strides(k), *_strides(v), *_strides(do), H, H // Hk, T,
                ctx.scale, ctx.scale * LOG2E)
        _attn_bwd_dkdv[(triton.cdiv(T, block_n), B * Hk)](
            q, k, v, do, dk, dv, lse, delta, prefix_t, *args,
            BLOCK_M=block_m, BLOCK_N=block_n, **common)
        # dQ swaps the roles: wide on the query rows it owns, narrow on the streamed keys.
        _attn_bwd_dq[(triton.cdiv(T, block_n), B * H)](
            q, k, v, do, dq, lse, delta, prefix_t, *args,
            BLOCK_M=block_n, BLOCK_N=block_m, **common)
        return dq, dk, dv, None, None, None


def _check(q, k, v):
    if q.dim() != 4 or k.shape != v.shape or k.dim() != 4:
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} must be (B, H, T, D)")
    B, H, T, D = q.shape
    if k.shape[0] != B or k.shape[2:] != (T, D):
        raise ValueError(f"k/v {tuple(k.shape)} must match q {tuple(q.shape)} except in heads")
    if H % k.shape[1]:
        raise ValueError(f"query heads ({H}) must be a multiple of key/value heads ({k.shape[1]})")
    if D not in (16, 32, 64, 128):  # powers of two for tl.arange; >128 is not compile-checked
        raise ValueError(f"head dim {D} not supported by the Triton kernel (16, 32, 64 or 128)")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")


def attention(q, k, v, causal: bool = True, prefix_len=None, scale: float | None = None):
    _check(q, k, v)
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    prefix = None
    if causal and prefix_len is not None:
        if isinstance(prefix_len, torch.Tensor):
            prefix = prefix_len.to(device=q.device, dtype=torch.int32).reshape(-1).expand(q.shape[0]).contiguous()
        else:
            prefix = torch.full((q.shape[0],), int(prefix_len), dtype=torch.int32, device=q.device)
    return FlashAttention.apply(q, k, v, bool(causal), prefix, scale)


# ----------------------------------------------------------------------------- AOT compile

def compile_specs(dtype: torch.dtype, capability: int, head_dim: int = 128, **_):
    t = "*" + TRITON_DTYPE[dtype]
    strides = lambda *names: {f"s{n}{a}": "i32" for n in names for a in "bht"}
    shape = {"H": "i32", "GROUP": "i32", "T": "i32"}
    specs = []
    bm, bn, w, st = fwd_config(head_dim, dtype, capability)
    for causal, prefix in ((True, False), (True, True), (False, False)):
        tag = "causal" if causal and not prefix else "prefix" if prefix else "full"
        flags = {"CAUSAL": causal, "HAS_PREFIX": prefix, "HEAD_DIM": head_dim, **_dot_precision(dtype)}
        specs.append(CompileSpec(
            f"attn_fwd_{tag}", _attn_fwd,
            {"q_ptr": t, "k_ptr": t, "v_ptr": t, "o_ptr": t, "lse_ptr": "*fp32", "prefix_ptr": "*i32",
             **strides("q", "k", "v"), **shape, "qk_scale": "fp32"},
            {**flags, "BLOCK_M": bm, "BLOCK_N": bn}, w, st, divisible=strides("q", "k", "v")))
        if tag == "full":
            continue
        bm2, bn2, w2, st2 = bwd_config(head_dim, dtype, capability)
        bwd_sig = {**strides("q", "k", "v", "d"), **shape, "sm_scale": "fp32", "qk_scale": "fp32"}
        specs.append(CompileSpec(
            f"attn_bwd_dkdv_{tag}", _attn_bwd_dkdv,
            {"q_ptr": t, "k_ptr": t, "v_ptr": t, "do_ptr": t, "dk_ptr": t, "dv_ptr": t, "lse_ptr": "*fp32",
             "delta_ptr": "*fp32", "prefix_ptr": "*i32", **bwd_sig},
            {**flags, "BLOCK_M": bm2, "BLOCK_N": bn2}, w2, st2, divisible=strides("q", "k", "v", "d")))
        specs.append(CompileSpec(
            f"attn_bwd_dq_{tag}", _attn_bwd_dq,
            {"q_ptr": t, "k_ptr": t, "v_ptr": t, "do_ptr": t, "dq_ptr": t, "lse_ptr": "*fp32",
             "delta_ptr": "*fp32", "prefix_ptr": "*i32", **bwd_sig},
            {**flags, "BLOCK_M": bn2, "BLOCK_N": bm2}, w2, st2, divisible=strides("q", "k", "v", "d")))
    specs.append(CompileSpec(
        "attn_bwd_delta", _attn_bwd_delta,
        {"o_ptr": t, "do_ptr": t, "delta_ptr": "*fp32", **strides("d"), "H": "i32", "T": "i32"},
        {"HEAD_DIM": head_dim, "BLOCK_M": 64}, 4, 1, divisible=strides("d")))
    return specs
