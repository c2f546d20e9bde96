"""Weight quantization of every block Linear: round-to-nearest (int8 per channel, or int-b per
group) and GPTQ (the same grid, with OBS error correction from calibration inputs).

The embedding and the output head stay in full precision, as llm-compressor's and GPTQ's
recipes leave ``lm_head`` (and the embedding it is tied to) alone: the loss kernel reads
the head's weight directly, and at this scale its share of the error is the largest.
"""
from __future__ import annotations

import torch

from pipeline.compress.calibrate import BLOCK_LINEARS, block_linears, output_error, sequential, weight_error
from pipeline.compress.obs import gptq
from pipeline.model.quantized import QuantLinear, expand_groups, dequantize, rtn, set_module


def quantize_rtn(model, ctx, bits: int, group_size: int, symmetric: bool, act_bits: int | None = None) -> None:
    """Replace each block Linear by a round-to-nearest QuantLinear (no calibration)."""
    for name in block_linears(model):
        replace_with_rtn(model, name, bits, group_size, symmetric, act_bits, ctx)


def replace_with_rtn(parent, name, bits, group_size, symmetric, act_bits, ctx, H=None, record_as=None) -> QuantLinear:
    """Swap ``parent``'s Linear ``name`` for its round-to-nearest QuantLinear."""
    W = parent.get_submodule(name).weight.detach().float()
    q, scale, zero = rtn(W, bits, group_size, symmetric)
    module = QuantLinear.from_codes(q, scale, zero, bits, group_size, symmetric, act_bits)
    _record(ctx, record_as or name, W, module.dequantized_weight(), H)
    set_module(parent, name, module)
    return module


def quantize_gptq(model, ctx) -> None:
    """GPTQ each block's Linears on the inputs they see with earlier blocks already quantized."""
    cfg = ctx.cfg

    def block_fn(b, block, stats):
        for n in BLOCK_LINEARS:
            name = f"blocks.{b}.{n}"
            linear = block.get_submodule(n)
            W, H = linear.weight.detach().float(), stats[n].hessian.matrix()
            q, scale, zero, loss = gptq(W, H, cfg.bits, cfg.group_size, cfg.symmetric, cfg.damp,
                                        cfg.block_size, cfg.act_order)
            module = QuantLinear.from_codes(q, scale, zero, cfg.bits, cfg.group_size, cfg.symmetric)
            _record(ctx, name, W, module.dequantized_weight(), H, obs_loss=loss)
            set_module(block, n, module)

    sequential(model, ctx.ids, block_fn, cfg.calibration_batch_size, cfg.progress, desc="gptq")


def _record(ctx, name, W, W_new, H=None, **extra) -> None:
    entry = {"weight_error": round(weight_error(W, W_new), 6), **extra}
    if H is not None:
        entry["output_error"] = round(output_error(W, W_new, H), 6)
    ctx.errors.setdefault(name, {}).update(entry)


def fake_quantize(W: torch.Tensor, bits: int, group_size: int, symmetric: bool) -> torch.Tensor:
    """W rounded to its own round-to-nearest grid, in float (what the searches score)."""
    q, scale, zero = rtn(W, bits, group_size, symmetric)
    return dequantize(q, expand_groups(scale, group_size, W.shape[1]), expand_groups(zero, group_size, W.shape[1]))
