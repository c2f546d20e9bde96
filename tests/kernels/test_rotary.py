import pytest
import torch

from tests.kernels.kernel_checks import DEVICE, DTYPES, TOL, assert_close, run_with_grads
from kernels import reference
from kernels.rotary import apply_rotary


def _inputs(B, Hq, Hkv, T, D, dtype):
    torch.manual_seed(0)
    q = torch.randn(B, Hq, T, D).to(DEVICE, dtype)
    k = torch.randn(B, Hkv, T, D).to(DEVICE, dtype)
    cos, sin = reference.rotary_cos_sin(T, D, device=DEVICE)
    return q, k, cos, sin


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,Hq,Hkv,T,D", [(2, 4, 2, 123, 64), (1, 3, 1, 200, 128), (1, 1, 1, 1, 16)],
                         ids=["gqa-odd-T", "D128-T200", "single-token"])
def test_rotary_matches_reference(B, Hq, Hkv, T, D, dtype):
    q, k, cos, sin = _inputs(B, Hq, Hkv, T, D, dtype)
    dq, dk = torch.randn_like(q), torch.randn_like(k)
    out, grads = run_with_grads(apply_rotary, (q, k, cos, sin), (dq, dk))
    ref_out, ref_grads = run_with_grads(reference.apply_rotary, (q, k, cos, sin), (dq, dk))
    assert_close(out, ref_out, TOL[dtype], "q,k")
    assert_close(grads[:2], ref_grads[:2], TOL[dtype], "dq,dk")


def test_reference_is_hf_llama_rotate_half():
    # transformers' LlamaForCausalLM: q * cos + rotate_half(q) * sin, cos/sin = cat(freqs, freqs).
    q, k, cos, sin = _inputs(1, 2, 1, 9, 32, torch.float64)
    emb_cos, emb_sin = torch.cat((cos, cos), -1).double(), torch.cat((sin, sin), -1).double()
    rotate_half = lambda x: torch.cat((-x[..., 16:], x[..., :16]), -1)
    rq, rk = reference.apply_rotary(q, k, cos, sin)
    torch.testing.assert_close(rq, q * emb_cos + rotate_half(q) * emb_sin)
    torch.testing.assert_close(rk, k * emb_cos + rotate_half(k) * emb_sin)


@pytest.mark.slow  # importing transformers alone takes seconds
def test_rotary_tables_match_transformers():
    transformers = pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import LlamaConfig, LlamaRotaryEmbedding

    cfg = LlamaConfig(hidden_size=128, num_attention_heads=2, max_position_embeddings=64, rope_theta=10000.0)
    rope = LlamaRotaryEmbedding(cfg)
    x = torch.zeros(1, 40, 64)
    hf_cos, hf_sin = rope(x, torch.arange(40)[None])
    cos, sin = reference.rotary_cos_sin(40, 64, base=10000.0)
    torch.testing.assert_close(torch.cat((cos, cos), -1), hf_cos[0])
    torch.testing.assert_close(torch.cat((sin, sin), -1), hf_sin[0])
    assert transformers


def test_rotary_is_in_place_on_views_of_a_projection():
    # The model's q and k are transposed views of a linear layer's output: rotated in place,
    # gradients must still reach the layer exactly as with the out-of-place reference.
    torch.manual_seed(0)
    B, T, H, D = 2, 37, 3, 64
    proj = torch.nn.Linear(16, 2 * H * D).to(DEVICE)
    x = torch.randn(B, T, 16, device=DEVICE)
    cos, sin = reference.rotary_cos_sin(T, D, device=DEVICE)
    grads = []
    for fn in (apply_rotary, reference.apply_rotary):
        proj.zero_grad()
        qk = proj(x).view(B, T, 2 * H, D).transpose(1, 2)
        q, k = qk[:, :H], qk[:, H:]
        rq, rk = fn(q, k, cos, sin)
        if fn is apply_rotary:
            assert rq.data_ptr() == q.data_ptr() and rk.data_ptr() == k.data_ptr()
        (rq.square().sum() + rk.sum()).backward()
        grads.append(proj.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-5)


def test_rotary_leaves_leaf_inputs_alone():
    q, k, cos, sin = _inputs(1, 2, 1, 10, 32, torch.float32)
    q.requires_grad_()
    before = q.detach().clone()
    rq, _ = apply_rotary(q, k.clone(), cos, sin)
    assert torch.equal(q.detach(), before) and not torch.equal(rq.detach(), before)


def test_rotary_rejects_wrong_table_shape():
    q, k, cos, sin = _inputs(1, 2, 1, 10, 32, torch.float32)
    with pytest.raises(ValueError, match="cos"):
        apply_rotary(q, k, cos[:5], sin[:5])
