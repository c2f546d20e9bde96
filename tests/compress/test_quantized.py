"""Packed quantized layers against compressed-tensors, the format's reference implementation."""
import pytest
import torch
import torch.nn.functional as F
from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
from compressed_tensors.quantization.lifecycle.forward import fake_quantize

from pipeline.model.quantized import LowRankLinear, QuantLinear, build_module, layer_entry, rtn


def ct_args(bits, group_size, symmetric):
    return QuantizationArgs(num_bits=bits, type="int", symmetric=symmetric,
                            strategy="group" if group_size else "channel", group_size=group_size or None)


@pytest.mark.parametrize("bits,group_size,symmetric", [(4, 32, True), (3, 64, False), (8, 0, True), (2, 32, False)])
def test_round_to_nearest_equals_compressed_tensors_fake_quantize(bits, group_size, symmetric):
    torch.manual_seed(0)
    W = torch.randn(48, 128) * torch.linspace(0.1, 3, 128)
    q, scale, zero = rtn(W, bits, group_size, symmetric)
    module = QuantLinear.from_codes(q, scale, zero, bits, group_size, symmetric)
    ref = fake_quantize(W, scale, zero if not symmetric else None, ct_args(bits, group_size, symmetric))
    torch.testing.assert_close(module.dequantized_weight(), ref, rtol=0, atol=1e-6)
    assert int(q.min()) >= -(1 << (bits - 1)) and int(q.max()) <= (1 << (bits - 1)) - 1


@pytest.mark.parametrize("bits,symmetric", [(4, True), (3, False)])
def test_packed_tensors_decompress_with_compressed_tensors(bits, symmetric):
    torch.manual_seed(1)
    W = torch.randn(64, 256)
    module = QuantLinear.from_codes(*rtn(W, bits, 128, symmetric), bits, 128, symmetric)
    state = {"weight_packed": module.weight_packed, "weight_scale": module.weight_scale,
             "weight_shape": torch.tensor([64, 256])}
    if not symmetric:
        state["weight_zero_point"] = module.weight_zero_point
    scheme = QuantizationScheme(targets=["Linear"], weights=ct_args(bits, 128, symmetric))
    out = PackedQuantizationCompressor.decompress(state, scheme)
    torch.testing.assert_close(out["weight"], module.dequantized_weight(), rtol=0, atol=0)
    # 32 codes fill exactly `bits` int32 words: 256 columns -> 8 * bits words per row
    assert module.weight_packed.shape == (64, 8 * bits)


def test_forward_is_a_linear_with_the_dequantized_weight_and_loads_from_its_state():
    torch.manual_seed(2)
    W, x = torch.randn(32, 64), torch.randn(3, 5, 64)
    module = QuantLinear.from_codes(*rtn(W, 4, 32, False), 4, 32, False)
    torch.testing.assert_close(module(x), F.linear(x, module.dequantized_weight()))
    rebuilt = build_module(layer_entry(module))
    rebuilt.load_state_dict(module.state_dict(), strict=True)
    torch.testing.assert_close(rebuilt(x), module(x), rtol=0, atol=0)


def test_activation_quantization_is_per_token_int8():
    torch.manual_seed(3)
    W, x = torch.randn(16, 32), torch.randn(4, 32) * torch.tensor([1.0, 10, 100, 1000])[:, None]
    module = QuantLinear.from_codes(*rtn(W, 8, 0, True), 8, 0, True, act_bits=8)
    scale = x.abs().amax(-1, keepdim=True) / 127.5  # compressed-tensors' symmetric scale
    xq = torch.clamp(torch.round(x / scale), -128, 127) * scale
    torch.testing.assert_close(module(x), F.linear(xq, module.dequantized_weight()))
    assert not torch.allclose(module(x), F.linear(x, module.dequantized_weight()))


def test_group_size_must_divide_the_input_width():
    with pytest.raises(ValueError, match="group_size 48 does not divide in_features 128"):
        QuantLinear(128, 16, 4, 48)


def test_low_rank_linear_applies_up_times_down():
    m = LowRankLinear(64, 32, 8)
    x = torch.randn(2, 64)
    torch.testing.assert_close(m(x), x @ (m.up.weight @ m.down.weight).T)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 7, 8])
@pytest.mark.parametrize("dim", [0, 1])
def test_our_packing_is_compressed_tensors_bit_for_bit(bits, dim):
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32 as ct_pack
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32 as ct_unpack

    from pipeline.model.quantized import pack_to_int32, unpack_from_int32

    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    q = torch.randint(lo, hi + 1, (37, 200), dtype=torch.int8, generator=torch.Generator().manual_seed(bits))
    q[0, :5] = torch.tensor([lo, hi, 0, lo, hi], dtype=torch.int8)
    ours = pack_to_int32(q, bits, packed_dim=dim)
    torch.testing.assert_close(ours, ct_pack(q, bits, packed_dim=dim), rtol=0, atol=0)
    torch.testing.assert_close(unpack_from_int32(ours, bits, q.shape, packed_dim=dim), q, rtol=0, atol=0)
    torch.testing.assert_close(ct_unpack(ours, bits, q.shape, packed_dim=dim), q, rtol=0, atol=0)


def test_int8_per_channel_equals_torchao_int8_weight_only():
    """Same scales as torchao's Int8WeightOnlyConfig, the same codes but at exact x.5 ties (we
    divide by the scale as compressed-tensors does, torchao multiplies by the reciprocal), and
    the same output order (x @ q.T, then the per-channel scale)."""
    tq = pytest.importorskip("torchao.quantization", reason="torchao is in the dev extra")
    torch.manual_seed(4)
    linear = torch.nn.Sequential(torch.nn.Linear(512, 256, bias=False))
    W = linear[0].weight.detach().clone()
    tq.quantize_(linear, tq.Int8WeightOnlyConfig())
    theirs = linear[0].weight
    q, scale, zero = rtn(W, 8, 0, True)
    torch.testing.assert_close(scale, theirs.scale.reshape(scale.shape), rtol=0, atol=0)
    differ = q != theirs.qdata
    frac = (W.double() / scale.double()).abs()[differ] % 1
    assert differ.sum() < 1e-3 * q.numel() and torch.allclose(frac, torch.full_like(frac, 0.5), atol=1e-5)
    x = torch.randn(6, 512)
    on_their_codes = QuantLinear.from_codes(theirs.qdata, scale, zero, 8, 0, True)
    torch.testing.assert_close(on_their_codes(x), linear(x), rtol=1e-5, atol=1e-5)
