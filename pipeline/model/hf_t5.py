"""The encoder-decoder's transformers export: ``T5ForConditionalGeneration`` (T5 v1.1 layout).

    export_hf(model, tokenizer_json, "out/hf")          # pipeline.model.hf dispatches here
    AutoModelForSeq2SeqLM.from_pretrained("out/hf")     # T5ForConditionalGeneration, same logits

encoder_decoder.py is T5's computation in this package's names, so the export renames
tensors, with one change: grouped-query key/value heads are repeated once per query head
(T5 has as many key/value heads as query heads), which gives every query the same keys and
values, hence the same scores. ``feed_forward_proj="gated-silu"`` is the SwiGLU MLP, tied
word embeddings make T5 scale the decoder output by d_model^-0.5 as ours does, and the
decoder starts from the pad token, as T5 does.
"""
from __future__ import annotations

import torch

from pipeline.model.encoder_decoder import MAX_DISTANCE, NUM_BUCKETS

_ATTN = {"attn": "SelfAttention", "cross": "EncDecAttention"}
_PROJ = {"q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o"}
_MLP = {"gate_proj": "wi_0", "up_proj": "wi_1", "down_proj": "wo"}


def t5_config(cfg, token_ids: dict):
    from transformers import T5Config

    pad = token_ids.get("pad")
    if pad is None:
        raise ValueError("export_hf: an encoder-decoder needs a pad token (T5's decoder start); the tokenizer has none")
    return T5Config(
        vocab_size=cfg.vocab_size, d_model=cfg.d_model, d_kv=cfg.head_dim, d_ff=cfg.d_mlp,
        num_layers=cfg.n_layer, num_decoder_layers=cfg.n_layer, num_heads=cfg.n_head,
        relative_attention_num_buckets=NUM_BUCKETS, relative_attention_max_distance=MAX_DISTANCE,
        dropout_rate=0.0, layer_norm_epsilon=cfg.norm_eps, feed_forward_proj="gated-silu",
        is_encoder_decoder=True, tie_word_embeddings=True, pad_token_id=pad, decoder_start_token_id=pad,
        eos_token_id=token_ids.get("eos"), bos_token_id=token_ids.get("bos"),
        architectures=["T5ForConditionalGeneration"])


def _block_name(i: int, n_layer: int, rest: str) -> str:
    """Our ``blocks.{i}.<rest>`` (encoder blocks first) -> T5's stack/block/layer name."""
    stack, j = ("encoder", i) if i < n_layer else ("decoder", i - n_layer)
    part, _, leaf = rest.partition(".")
    ff_layer = 1 if stack == "encoder" else 2
    if part == "attn_norm":
        return f"{stack}.block.{j}.layer.0.layer_norm.{leaf}"
    if part == "cross_norm":
        return f"{stack}.block.{j}.layer.1.layer_norm.{leaf}"
    if part == "mlp_norm":
        return f"{stack}.block.{j}.layer.{ff_layer}.layer_norm.{leaf}"
    if part in _ATTN:
        proj, _, leaf = leaf.partition(".")
        return f"{stack}.block.{j}.layer.{0 if part == 'attn' else 1}.{_ATTN[part]}.{_PROJ[proj]}.{leaf}"
    if part == "mlp":
        proj, _, leaf = leaf.partition(".")
        return f"{stack}.block.{j}.layer.{ff_layer}.DenseReluDense.{_MLP[proj]}.{leaf}"
    raise KeyError(f"no T5 name for parameter blocks.{i}.{rest}")


def to_t5_name(name: str, n_layer: int) -> str:
    top = {"embed.weight": "shared.weight", "enc_norm.weight": "encoder.final_layer_norm.weight",
           "dec_norm.weight": "decoder.final_layer_norm.weight",
           "enc_bias.weight": "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
           "dec_bias.weight": "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"}
    if name in top:
        return top[name]
    head, i, rest = name.split(".", 2)
    if head != "blocks":
        raise KeyError(f"no T5 name for parameter {name!r}")
    return _block_name(int(i), n_layer, rest)


def t5_state(model) -> dict[str, torch.Tensor]:
    """T5's tensors for our encoder-decoder: renamed, key/value heads repeated for GQA, the
    tied output head left to transformers (it re-ties lm_head to ``shared``)."""
    cfg = model.cfg
    groups, hd = cfg.n_head // cfg.n_kv_head, cfg.head_dim
    state = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            continue
        t = tensor.detach().to("cpu")
        if groups > 1 and name.endswith(("k_proj.weight", "v_proj.weight")):
            t = t.view(cfg.n_kv_head, hd, cfg.d_model).repeat_interleave(groups, dim=0).reshape(cfg.n_head * hd, -1)
        state[to_t5_name(name, cfg.n_layer)] = t.contiguous()
    return state
