import math

import pytest
import torch

from tests.kernels.kernel_checks import ATTN_TOL, DEVICE, DTYPES, assert_close, run_with_grads
from kernels import reference
from kernels.flash_attention import attention


def _qkv(B, Hq, Hkv, T, D, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    make = lambda H: torch.randn(B, H, T, D, generator=g).to(DEVICE, dtype)
    return make(Hq), make(Hkv), make(Hkv), make(Hq)  # q, k, v, d(out)


def _check(B, Hq, Hkv, T, D, dtype, **kw):
    q, k, v, do = _qkv(B, Hq, Hkv, T, D, dtype)
    out, grads = run_with_grads(attention, (q, k, v), do, **kw)
    ref_out, ref_grads = run_with_grads(reference.attention, (q, k, v), do, **kw)
    assert out[0].shape == (B, Hq, T, D) and out[0].dtype == dtype
    assert_close(out, ref_out, ATTN_TOL[dtype], "o")
    assert_close(grads, ref_grads, ATTN_TOL[dtype], "dq,dk,dv")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,Hq,Hkv,T,D", [(1, 2, 1, 123, 64), (2, 2, 2, 70, 128)],
                         ids=["gqa-T123-D64", "mha-T70-D128"])
def test_causal_attention_matches_reference(B, Hq, Hkv, T, D, dtype):
    _check(B, Hq, Hkv, T, D, dtype)


@pytest.mark.parametrize("prefix", [50, 0, 200, "per-row"], ids=["int", "zero", "whole", "tensor"])
def test_prefix_decoder_mask(prefix):
    T = 130
    if prefix == "per-row":
        prefix = torch.tensor([5, 129], device=DEVICE)
    _check(2, 2, 1, T, 64, torch.float32, prefix_len=prefix)


def test_non_causal_attention():
    _check(1, 2, 1, 100, 64, torch.float32, causal=False)


@pytest.mark.parametrize("T", [1, 17])
def test_tiny_sequences(T):
    _check(1, 2, 2, T, 32, torch.float32)


def test_explicit_scale():
    _check(1, 1, 1, 40, 64, torch.float16, scale=0.3)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
def test_long_gqa_4_to_1(dtype):
    _check(2, 4, 1, 257, 128, dtype, prefix_len=torch.tensor([0, 77], device=DEVICE))


def test_strided_inputs_from_a_fused_projection():
    # q/k/v as transposed views of one (B, T, 3H, D) projection: unit stride on D only.
    torch.manual_seed(0)
    B, T, H, D = 1, 65, 2, 64
    qkv = torch.randn(B, T, 3 * H, D, device=DEVICE).transpose(1, 2)
    q, k, v = qkv[:, :H], qkv[:, H:2 * H], qkv[:, 2 * H:]
    torch.testing.assert_close(attention(q, k, v), reference.attention(q, k, v), **ATTN_TOL[torch.float32])


def test_reference_matches_softmax_attention_written_out():
    # The reference uses SDPA; check it, GQA and the prefix mask against the textbook formula.
    q, k, v, _ = _qkv(2, 4, 2, 33, 16, torch.float64)
    prefix = torch.tensor([10, 0], device=DEVICE)
    allowed = torch.zeros(2, 1, 33, 33, dtype=torch.bool, device=DEVICE)
    for b, p in enumerate(prefix.tolist()):
        for i in range(33):
            for j in range(33):
                allowed[b, 0, i, j] = j <= i or (i < p and j < p)
    kk, vv = k.repeat_interleave(2, 1), v.repeat_interleave(2, 1)
    scores = (q @ kk.transpose(-1, -2)) / math.sqrt(16)
    expected = torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1) @ vv
    torch.testing.assert_close(reference.attention(q, k, v, prefix_len=prefix), expected)
    causal = torch.softmax(scores.masked_fill(~torch.ones(33, 33, dtype=torch.bool).tril(), float("-inf")), -1) @ vv
    torch.testing.assert_close(reference.attention(q, k, v), causal)
    torch.testing.assert_close(reference.attention(q, k, v, causal=False), torch.softmax(scores, -1) @ vv)


def test_rejects_bad_shapes():
    q, k, v, _ = _qkv(1, 3, 2, 8, 64, torch.float32)
    with pytest.raises(ValueError, match="multiple"):
        attention(q, k, v)
    q, k, v, _ = _qkv(1, 2, 1, 8, 48, torch.float32)
    with pytest.raises(ValueError, match="head dim 48"):
        attention(q, k, v)
