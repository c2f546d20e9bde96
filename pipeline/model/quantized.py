"""Compressed Linear layers, and the layout file that tells a loader where they go.

    QuantLinear     weight-only int-b (2..8 bits), per output channel or per group of input
                    columns, symmetric or with zero points; optionally int8 activations per
                    token (SmoothQuant's W8A8). Stored packed as compressed-tensors'
                    ``pack-quantized`` format stores it: ``weight_packed`` (int32, 32 values in
                    ``bits`` words), ``weight_scale`` (out, groups), ``weight_zero_point``
                    (packed along the output dim; asymmetric only). The forward dequantizes on
                    the fly from int8 codes unpacked at load (a non-persistent buffer, 1
                    byte per weight in memory, moved with the module's other tensors).
                    ATen's CPU int8 weight-only matmul (``_weight_int8pack_mm``, torchao's
                    CPU path) measured ~40x slower than dequantize + matmul at these
                    shapes on our CPU build, so it is not used.
    LowRankLinear   W ~= up @ down: two smaller Linears (truncated SVD)

A compressed model directory carries ``compression.json``; its ``layers`` map names each
replaced Linear and its kind, so ``apply_layout`` rebuilds the same modules before a strict
load, and ``shared_blocks`` re-ties blocks that share weights (ALBERT-style).

Integer convention (compressed-tensors'): q in [-2^(b-1), 2^(b-1)-1], zero point in the same
range, w = (q - zero) * scale.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


# compressed-tensors' dense int32 packing (pack_to_int32 / unpack_from_int32), bit for bit
# (tests/compress/test_quantized.py checks it against the library): importing the library's
# helpers pulls in transformers and torchao, 43 s on our shared 2-core machine against 9 s
# for torch alone, and every reader of a quantized model would pay it.
def pack_to_int32(q: torch.Tensor, bits: int, packed_dim: int = 1) -> torch.Tensor:
    """int8 codes (rows, cols) -> int32 words: element i of a row at bits [i*b, (i+1)*b),
    offset to unsigned by 2^(b-1); 32 elements fill exactly ``bits`` words."""
    if packed_dim == 0:
        return pack_to_int32(q.T, bits).T.contiguous()
    rows, cols = q.shape
    u = q.to(torch.int64) + (1 << (bits - 1))
    u = F.pad(u, (0, -cols % 32)).reshape(rows, -1, 32)
    words = torch.zeros(rows, u.shape[1], bits + 1, dtype=torch.int64)
    for e in range(32):
        word, offset = divmod(e * bits, 32)
        words[:, :, word] |= u[:, :, e] << offset  # bits past 32 spill into the next word below
        words[:, :, word + 1] |= u[:, :, e] >> (32 - offset)
    words = words[:, :, :bits] & 0xFFFFFFFF
    words = torch.where(words >= 1 << 31, words - (1 << 32), words)  # as int32 two's complement
    return words.reshape(rows, -1)[:, :-(-cols * bits // 32)].to(torch.int32).contiguous()


def unpack_from_int32(packed: torch.Tensor, bits: int, shape, packed_dim: int = 1) -> torch.Tensor:
    """The inverse of pack_to_int32: int8 codes of ``shape``, with one gather per half of a
    straddling element instead of a loop over the 32 slots of a word group."""
    if packed_dim == 0:
        return unpack_from_int32(packed.T, bits, (shape[1], shape[0])).T.contiguous()
    cols = int(shape[1])
    words = F.pad(packed.to(torch.int64) & 0xFFFFFFFF, (0, 1))  # a zero word after the last
    start = torch.arange(cols, device=packed.device) * bits  # element i at bits [i*b, (i+1)*b)
    word, offset = start // 32, start % 32
    # The element's low bits from its word, its high bits (when it straddles two) from the next;
    # shifting the next word left by 32 - offset >= bits leaves nothing under the mask otherwise.
    value = (words[:, word] >> offset) | (words[:, word + 1] << (32 - offset))
    return ((value & ((1 << bits) - 1)) - (1 << (bits - 1))).to(torch.int8)


def qrange(bits: int) -> tuple[int, int]:
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def groups_of(in_features: int, group_size: int) -> int:
    return 1 if group_size == 0 else in_features // group_size


def quant_params(w: torch.Tensor, bits: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max (scale, zero) for each row of ``w`` (rows, cols) -> (rows,), (rows,) int8.
    Symmetric: scale = max|w| / ((qmax - qmin) / 2), zero 0 (GPTQ's and compressed-tensors'
    choice, so the grid spans [-8, 7] x scale at 4 bits); asymmetric: the grid covers
    [min(w, 0), max(w, 0)] with an integer zero point."""
    qmin, qmax = qrange(bits)
    lo, hi = w.min(dim=1).values.clamp(max=0), w.max(dim=1).values.clamp(min=0)
    if symmetric:
        scale = torch.maximum(lo.abs(), hi) / ((qmax - qmin) / 2)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        return scale, torch.zeros_like(scale, dtype=torch.int8)
    scale = (hi - lo) / (qmax - qmin)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero = (qmin - torch.round(lo / scale)).clamp(qmin, qmax)
    return scale, zero.to(torch.int8)


def quantize(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """int8 codes of ``w`` given per-element-broadcastable scale and zero."""
    qmin, qmax = qrange(bits)
    return torch.clamp(torch.round(w / scale) + zero.to(w.dtype), qmin, qmax).to(torch.int8)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    return (q.to(scale.dtype) - zero.to(scale.dtype)) * scale


def expand_groups(t: torch.Tensor, group_size: int, in_features: int) -> torch.Tensor:
    """(out, groups) -> (out, in_features): each group's value repeated over its columns."""
    return t.repeat_interleave(in_features if group_size == 0 else group_size, dim=1)


def rtn(w: torch.Tensor, bits: int, group_size: int, symmetric: bool):
    """Round-to-nearest: (codes int8 (out, in), scale (out, groups), zero int8 (out, groups))."""
    out_f, in_f = w.shape
    g = groups_of(in_f, group_size)
    grouped = w.reshape(out_f * g, in_f // g)
    scale, zero = quant_params(grouped, bits, symmetric)
    q = quantize(grouped, scale[:, None], zero[:, None], bits).reshape(out_f, in_f)
    return q, scale.reshape(out_f, g), zero.reshape(out_f, g)


def quantize_activations_per_token(x: torch.Tensor, bits: int = 8, amax: torch.Tensor | None = None) -> torch.Tensor:
    """Dynamic symmetric int-b fake quantization per token (last dim), as W8A8 inference does:
    the int matmul result equals this float matmul of dequantized values. The scale is
    compressed-tensors' (max|x| / ((qmax - qmin) / 2)), so transformers computes the same.
    ``amax`` (..., 1): each token's max |x| when ``x`` is a slice of its row (tensor parallelism)."""
    qmin, qmax = qrange(bits)
    if amax is None:
        amax = x.abs().amax(dim=-1, keepdim=True)
    scale = amax.clamp(min=1e-8) / ((qmax - qmin) / 2)
    return torch.clamp(torch.round(x / scale), qmin, qmax) * scale


class QuantLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bits: int, group_size: int = 0,
                 symmetric: bool = True, act_bits: int | None = None, dtype=torch.float32):
        super().__init__()
        if not 2 <= bits <= 8:
            raise ValueError(f"QuantLinear: bits must be 2..8, got {bits}")
        if group_size and in_features % group_size:
            raise ValueError(f"QuantLinear: group_size {group_size} does not divide in_features {in_features}")
        self.in_features, self.out_features = in_features, out_features
        self.bits, self.group_size, self.symmetric, self.act_bits = bits, group_size, symmetric, act_bits
        g = groups_of(in_features, group_size)
        words = -(-in_features * bits // 32)
        self.register_buffer("weight_packed", torch.zeros(out_features, words, dtype=torch.int32))
        self.register_buffer("weight_scale", torch.ones(out_features, g, dtype=dtype))
        # The codes the forward reads, unpacked from weight_packed whenever that is set (not saved:
        # the file holds the packed words). A buffer, so whatever moves the module's tensors (.to,
        # the layer offloader) moves these too; unpacking on every call measured 5-9x slower.
        self.register_buffer("weight_codes", torch.zeros(out_features, in_features, dtype=torch.int8),
                             persistent=False)
        if not symmetric:
            zp_words = -(-out_features * bits // 32)
            self.register_buffer("weight_zero_point", torch.zeros(zp_words, g, dtype=torch.int32))

    @classmethod
    def from_codes(cls, q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int, group_size: int,
                   symmetric: bool, act_bits: int | None = None) -> "QuantLinear":
        out_f, in_f = q.shape
        m = cls(in_f, out_f, bits, group_size, symmetric, act_bits, dtype=scale.dtype)
        m.weight_packed.copy_(pack_to_int32(q.to(torch.int8), bits))
        m.weight_codes.copy_(q)
        m.weight_scale.copy_(scale)
        if not symmetric:
            m.weight_zero_point.copy_(pack_to_int32(zero.to(torch.int8), bits, packed_dim=0))
        return m

    def codes(self) -> torch.Tensor:
        """int8 codes (out, in)."""
        return self.weight_codes

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        with torch.no_grad():  # new packed words: the codes follow
            self.weight_codes = unpack_from_int32(self.weight_packed, self.bits, self.weight_codes.shape)

    def zero_points(self) -> torch.Tensor:
        if self.symmetric:
            return torch.zeros_like(self.weight_scale, dtype=torch.int8)
        return unpack_from_int32(self.weight_zero_point, self.bits, self.weight_scale.shape, packed_dim=0)

    def dequantized_weight(self) -> torch.Tensor:
        # Broadcast each group's scale over a (out, groups, group_size) view of the codes:
        # repeating the scales to the weight's shape first made int4 g128 decoding 4x slower.
        g = self.weight_scale.shape[1]
        q = self.codes().view(self.out_features, g, self.in_features // g).to(self.weight_scale.dtype)
        if not self.symmetric:
            q = q - self.zero_points()[:, :, None].to(q.dtype)
        return (q * self.weight_scale[:, :, None]).view(self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_bits:
            # W8A8: the dequantized weight, as transformers' compressed-tensors layer computes it;
            # the next layer rounds these outputs to int8 again, so a different float order
            # would flip some of its codes.
            return F.linear(quantize_activations_per_token(x, self.act_bits), self.dequantized_weight().to(x.dtype))
        if self.symmetric and not self.group_size:
            # One scale per output channel: scale the outputs instead of every weight (what
            # torchao's int8 weight-only matmul does), out multiplications instead of out x in.
            return F.linear(x, self.codes().to(x.dtype)) * self.weight_scale[:, 0].to(x.dtype)
        return F.linear(x, self.dequantized_weight().to(x.dtype))

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, bits={self.bits}, group={self.group_size}, "
                f"symmetric={self.symmetric}, act_bits={self.act_bits}")


class LowRankLinear(nn.Module):
    """x -> up(down(x)): rank-r factors of an (out, in) weight, r (in + out) parameters."""

    def __init__(self, in_features: int, out_features: int, rank: int):
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=False)

    def dequantized_weight(self) -> torch.Tensor:
        return self.up.weight @ self.down.weight

    def forward(self, x):
        return self.up(self.down(x))


def dense_weight(module: nn.Module) -> torch.Tensor:
    """The (out, in) weight a Linear-like module applies."""
    return module.weight if isinstance(module, nn.Linear) else module.dequantized_weight()


def layer_entry(module: nn.Module) -> dict | None:
    """compression.json's description of a replaced module (None for a plain Linear)."""
    if isinstance(module, QuantLinear):
        return {"kind": "quant", "in": module.in_features, "out": module.out_features, "bits": module.bits,
                "group_size": module.group_size, "symmetric": module.symmetric, "act_bits": module.act_bits}
    if isinstance(module, LowRankLinear):
        return {"kind": "lowrank", "in": module.in_features, "out": module.out_features, "rank": module.rank}
    return None


def build_module(entry: dict) -> nn.Module:
    if entry["kind"] == "quant":
        return QuantLinear(entry["in"], entry["out"], entry["bits"], entry["group_size"], entry["symmetric"],
                           entry.get("act_bits"))
    if entry["kind"] == "lowrank":
        return LowRankLinear(entry["in"], entry["out"], entry["rank"])
    raise ValueError(f"unknown compressed layer kind {entry['kind']!r}")


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def tie_blocks(model: nn.Module, groups: list[list[int]]) -> None:
    """Make every block of a group the group's first block (one set of weights in memory)."""
    for group in groups:
        for i in group[1:]:
            model.blocks[i] = model.blocks[group[0]]


def apply_layout(model: nn.Module, layout: dict, where) -> None:
    """Swap in the modules ``layout["layers"]`` names, so a strict load sees the same tensors;
    an entry naming no Linear of the model is an error naming it."""
    for name, entry in layout.get("layers", {}).items():
        try:
            current = model.get_submodule(name)
        except AttributeError:
            current = None
        if not isinstance(current, nn.Linear):
            raise ValueError(f"{where}: layer {name!r} is not a Linear of this model config")
        if (entry["in"], entry["out"]) != (current.in_features, current.out_features):
            raise ValueError(f"{where}: layer {name!r} is {entry['out']}x{entry['in']}, "
                             f"the model config says {current.out_features}x{current.in_features}")
        set_module(model, name, build_module(entry))
