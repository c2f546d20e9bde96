"""Paged decode attention (vLLM's PagedAttention): one query token per sequence reads its keys
and values straight from a block pool through the sequence's block table.

One program per (sequence, key/value head): the GROUP query heads that share that K/V head
(grouped-query attention) are one tile of rows, so each cache block is loaded once for all
of them. The program walks the sequence's blocks in table order with an online softmax
(running max and sum, as flash attention), so no (heads, context) score matrix is stored and
the cache is never gathered into a contiguous copy. The last block is masked by the context
length, which need not be a multiple of the block size.

Query rows are padded to 16 (tl.dot's smallest tile); the block size is the key tile, so it
must be a power of two >= 16 (vLLM's default is 16). Head dims 16..256, powers of two.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import TRITON_DTYPE, CompileSpec, next_pow2

LOG2E = 1.4426950408889634


@triton.jit
def _paged_decode(q_ptr, k_ptr, v_ptr, o_ptr, table_ptr, lens_ptr,
                  sq_n, sq_h, sk_b, sk_t, sk_h, so_n, so_h, st_n, qk_scale,
                  GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, BLOCK: tl.constexpr,
                  HEAD_DIM: tl.constexpr, DOT: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    kv_head = tl.program_id(1)
    length = tl.load(lens_ptr + n)
    rows = tl.arange(0, GROUP_PAD)
    dims = tl.arange(0, HEAD_DIM)
    slots = tl.arange(0, BLOCK)
    heads = kv_head * GROUP + rows
    q = tl.load(q_ptr + n * sq_n + heads[:, None] * sq_h + dims[None, :], mask=(rows < GROUP)[:, None], other=0.0)
    m_i = tl.full((GROUP_PAD,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((GROUP_PAD,), dtype=tl.float32)
    acc = tl.zeros((GROUP_PAD, HEAD_DIM), dtype=tl.float32)
    for j in range(0, tl.cdiv(length, BLOCK)):
        block = tl.load(table_ptr + n * st_n + j).to(tl.int64)
        visible = j * BLOCK + slots < length
        offsets = block * sk_b + slots[:, None] * sk_t + kv_head * sk_h + dims[None, :]
        k = tl.load(k_ptr + offsets, mask=visible[:, None], other=0.0)
        v = tl.load(v_ptr + offsets, mask=visible[:, None], other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=DOT) * qk_scale  # (GROUP_PAD, BLOCK), log2 units
        s = tl.where(visible[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT)
        m_i = m_new
    out = acc / l_i[:, None]
    tl.store(o_ptr + n * so_n + heads[:, None] * so_h + dims[None, :], out.to(o_ptr.dtype.element_ty),
             mask=(rows < GROUP)[:, None])


def _check(q, k_cache, v_cache, block_tables, context_lens):
    N, Hq, D = q.shape
    _, block_size, Hkv, Dk = k_cache.shape
    problems = []
    if v_cache.shape != k_cache.shape or Dk != D:
        problems.append(f"caches {tuple(k_cache.shape)}/{tuple(v_cache.shape)} do not match q {tuple(q.shape)}")
    if Hq % Hkv:
        problems.append(f"query heads ({Hq}) must be a multiple of key/value heads ({Hkv})")
    if block_size < 16 or block_size & (block_size - 1):
        problems.append(f"block size {block_size} must be a power of two >= 16")
    if D < 16 or D > 256 or D & (D - 1):
        problems.append(f"head dim {D} must be a power of two in 16..256")
    if block_tables.shape[0] != N or context_lens.shape != (N,):
        problems.append(f"block_tables {tuple(block_tables.shape)} / context_lens {tuple(context_lens.shape)} "
                        f"must have {N} rows")
    if problems:
        raise ValueError("paged_attention: " + "; ".join(problems))


def paged_attention(q, k_cache, v_cache, block_tables, context_lens, scale: float | None = None):
    _check(q, k_cache, v_cache, block_tables, context_lens)
    N, Hq, D = q.shape
    _, block_size, Hkv, _ = k_cache.shape
    if k_cache.stride(-1) != 1 or k_cache.stride() != v_cache.stride():
        raise ValueError("paged_attention: caches need a unit stride on the head dim and equal strides")
    q = q if q.stride(-1) == 1 else q.contiguous()
    tables = block_tables.to(torch.int32).contiguous()
    lens = context_lens.to(device=q.device, dtype=torch.int32).contiguous()
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    group = Hq // Hkv
    scale = D ** -0.5 if scale is None else scale
    _paged_decode[(N, Hkv)](q, k_cache, v_cache, out, tables, lens,
                            q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
                            out.stride(0), out.stride(1), tables.stride(0), scale * LOG2E,
                            GROUP=group, GROUP_PAD=max(16, next_pow2(group)), BLOCK=block_size, HEAD_DIM=D,
                            DOT=_dot_precision(q.dtype), num_warps=4)
    return out


def _dot_precision(dtype: torch.dtype) -> str:
    # fp32: 3xTF32 tensor-core dots (near-fp32 accuracy), as the flash-attention kernel.
    return "tf32x3" if dtype == torch.float32 else "tf32"


def compile_specs(dtype: torch.dtype, capability: int, head_dim: int = 128, **_):
    t = "*" + TRITON_DTYPE[dtype]
    strides = ("sq_n", "sq_h", "sk_b", "sk_t", "sk_h", "so_n", "so_h", "st_n")
    specs = []
    # Llama 3 8B's group of 4 and a 16-wide group (the padded tile's full size), block 16 (vLLM's
    # default) and 32.
    for group, block in ((4, 16), (16, 32)):
        specs.append(CompileSpec(
            f"paged_decode_g{group}_b{block}", _paged_decode,
            {"q_ptr": t, "k_ptr": t, "v_ptr": t, "o_ptr": t, "table_ptr": "*i32", "lens_ptr": "*i32",
             **{s: "i32" for s in strides}, "qk_scale": "fp32"},
            {"GROUP": group, "GROUP_PAD": max(16, next_pow2(group)), "BLOCK": block, "HEAD_DIM": head_dim,
             "DOT": _dot_precision(dtype)}, 4, 1, divisible=strides[:-1]))  # tables: any width
    return specs
