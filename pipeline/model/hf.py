"""Export to, and import from, the Hugging Face transformers format.

    export_hf(model, "results/tokenize/<key>/tokenizer.json", "out/hf")
    AutoModelForCausalLM.from_pretrained("out/hf")    # LlamaForCausalLM (Qwen3ForCausalLM with qk_norm)
    AutoModelForSeq2SeqLM.from_pretrained("out/hf")   # T5ForConditionalGeneration (arch=encoder_decoder, hf_t5.py)
    model = import_hf("out/hf")                       # back to our Transformer

The default model is Llama's architecture weight for weight (same rotate_half RoPE, RMSNorm,
SwiGLU, GQA), so the export is a renaming of tensors: no permutation, no numerical change.
QK-norm is Qwen3's per-head q_norm/k_norm, so those models export as Qwen3. Sinusoidal
positions have no Llama equivalent and are refused. The ecosystem (lm-evaluation-harness,
vLLM, llama.cpp's converter) loads the directory as it loads any Llama checkpoint.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch

from pipeline.model.transformer import Config, Transformer

log = logging.getLogger("lmdag.model.hf")

# Our parameter names -> Hugging Face Llama/Qwen3 names (per layer, ``{i}`` is the index).
_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn.q_proj.weight": "self_attn.q_proj.weight",
    "attn.k_proj.weight": "self_attn.k_proj.weight",
    "attn.v_proj.weight": "self_attn.v_proj.weight",
    "attn.o_proj.weight": "self_attn.o_proj.weight",
    "attn.q_norm.weight": "self_attn.q_norm.weight",
    "attn.k_norm.weight": "self_attn.k_norm.weight",
    "mlp_norm.weight": "post_attention_layernorm.weight",
    "mlp.gate_proj.weight": "mlp.gate_proj.weight",
    "mlp.up_proj.weight": "mlp.up_proj.weight",
    "mlp.down_proj.weight": "mlp.down_proj.weight",
}
_TOP_NAMES = {"embed.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
              "lm_head.weight": "lm_head.weight"}
_LAYER = re.compile(r"^blocks\.(\d+)\.(.+)$")
_HF_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


def to_hf_name(name: str) -> str:
    if name in _TOP_NAMES:
        return _TOP_NAMES[name]
    m = _LAYER.match(name)
    if not m or m.group(2) not in _LAYER_NAMES:
        raise KeyError(f"no Hugging Face name for parameter {name!r}")
    return f"model.layers.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}"


def from_hf_name(name: str) -> str:
    top = {v: k for k, v in _TOP_NAMES.items()}
    if name in top:
        return top[name]
    m = _HF_LAYER.match(name)
    inverse = {v: k for k, v in _LAYER_NAMES.items()}
    if not m or m.group(2) not in inverse:
        raise KeyError(f"unsupported tensor {name!r} in the checkpoint (not a Llama/Qwen3 weight we model)")
    return f"blocks.{m.group(1)}.{inverse[m.group(2)]}"


def _special_tokens(tokenizer_json: Path) -> dict[str, str]:
    """bos/eos/pad strings: from the tokenize stage's meta.json beside the tokenizer (or the
    copy pretrain keeps as tokenizer_meta.json), else the stage's defaults when present."""
    for name in ("meta.json", "tokenizer_meta.json"):
        meta = tokenizer_json.parent / name
        if meta.is_file() and "special_token_strings" in (m := json.loads(meta.read_text())):
            return m["special_token_strings"]
    spec = json.loads(tokenizer_json.read_text())
    # special tokens usually sit among the added tokens, not in the BPE model's own vocabulary
    vocab = {*spec["model"]["vocab"], *(t["content"] for t in spec.get("added_tokens") or [])}
    defaults = {"bos": "<|bos|>", "eos": "<|endoftext|>", "pad": "<|pad|>"}
    return {k: v for k, v in defaults.items() if v in vocab}


def hf_config(cfg: Config, token_ids: dict[str, int | None]):
    from transformers import LlamaConfig, Qwen3Config

    if cfg.pos_emb != "rope":
        raise ValueError("export_hf: pos_emb=sinusoidal has no Llama/Qwen3 equivalent; only rope models export")
    if cfg.attention == "prefix":
        log.warning("export_hf: a prefix-attention model exports as a causal LM: the export computes what our "
                    "model does without prefix_len (Llama has no bidirectional prefix)")
    common = dict(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_mlp,
        num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head, num_key_value_heads=cfg.n_kv_head,
        head_dim=cfg.head_dim, max_position_embeddings=cfg.max_seq_len, rms_norm_eps=cfg.norm_eps,
        rope_theta=cfg.rope_base, tie_word_embeddings=cfg.tie_embeddings, attention_bias=False,
        hidden_act="silu", initializer_range=cfg.init_std, bos_token_id=token_ids.get("bos"),
        eos_token_id=token_ids.get("eos"), pad_token_id=token_ids.get("pad"),
    )
    if cfg.qk_norm:
        return Qwen3Config(**common, use_sliding_window=False, architectures=["Qwen3ForCausalLM"])
    return LlamaConfig(**common, mlp_bias=False, architectures=["LlamaForCausalLM"])


def _chat_files(tok, tokenizer_dir: Path, ids: dict, out: Path) -> None:
    """The chat template (apply_chat_template) and a generation config that also stops at the
    end-of-turn marker, so ``generate`` ends an assistant reply where training ended it."""
    from transformers import GenerationConfig

    from pipeline.core.chat import end_token, find_template

    template = find_template(tokenizer_dir)
    if template is None:
        return
    tok.chat_template = template
    end = end_token(tokenizer_dir)
    stops = [i for i in (ids.get("eos"), tok.convert_tokens_to_ids(end) if end else None) if i is not None]
    GenerationConfig(bos_token_id=ids.get("bos"), eos_token_id=stops, pad_token_id=ids.get("pad")).save_pretrained(out)


def export_hf(model: Transformer, tokenizer_json_path: str | Path, out_dir: str | Path) -> Path:
    """Write ``config.json``, ``model.safetensors`` and the tokenizer files into ``out_dir``."""
    if model.cfg.virtual_tokens:
        raise ValueError("export_hf: prompt_tokens/prefix_tokens have no transformers equivalent; "
                         "export the model without them and its virtual tokens as a peft adapter "
                         "(pipeline/finetune/models.py save_virtual_adapter)")
    from safetensors.torch import save_file
    from transformers import PreTrainedTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer_json = Path(tokenizer_json_path)
    specials = _special_tokens(tokenizer_json)
    tok = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_json), model_max_length=model.cfg.max_seq_len,
                                  **{f"{k}_token": v for k, v in specials.items()})
    ids = {k: tok.convert_tokens_to_ids(v) for k, v in specials.items()}
    if model.cfg.arch == "encoder_decoder":  # T5ForConditionalGeneration (hf_t5.py); chat is a decoder's
        from pipeline.model.hf_t5 import t5_config, t5_state

        config, state = t5_config(model.cfg, ids), t5_state(model)
    else:
        config, state = hf_config(model.cfg, ids), _decoder_state(model)
        _chat_files(tok, tokenizer_json.parent, ids, out)
    config.save_pretrained(out)
    tok.save_pretrained(out)
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    return out


def _decoder_state(model: Transformer) -> dict[str, torch.Tensor]:
    state = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and model.cfg.tie_embeddings:
            continue  # tied: transformers re-ties it to the embedding on load
        state[to_hf_name(name)] = tensor.detach().to("cpu").contiguous()
    return state


def _load_tensors(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = directory / "model.safetensors.index.json"
    if index.is_file():  # a sharded checkpoint, as large models ship
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (directory / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise FileNotFoundError(f"{directory}: no model.safetensors (or its index); pytorch_model.bin is not read")
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        tensors.update(load_file(directory / f))
    return tensors


def config_from_hf(hf: dict) -> Config:
    """Our Config for a Llama/Qwen3 config.json, refusing what the model cannot represent."""
    kind = hf.get("model_type")
    if kind not in ("llama", "qwen3"):
        raise ValueError(f"import_hf: model_type {kind!r} is not supported (llama, qwen3)")
    rope = hf.get("rope_parameters") or {}
    rope_type = rope.get("rope_type") or (hf.get("rope_scaling") or {}).get("rope_type", "default")
    problems = []
    if rope_type != "default":
        problems.append(f"rope scaling {rope_type!r}")
    if hf.get("hidden_act", "silu") != "silu":
        problems.append(f"hidden_act {hf['hidden_act']!r}")
    if hf.get("attention_bias") or hf.get("mlp_bias"):
        problems.append("biases")
    if hf.get("use_sliding_window"):
        problems.append("sliding-window attention")
    head_dim = hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"]
    if head_dim * hf["num_attention_heads"] != hf["hidden_size"]:
        problems.append(f"head_dim {head_dim} x {hf['num_attention_heads']} heads != hidden_size {hf['hidden_size']}")
    if problems:
        raise ValueError("import_hf: this checkpoint uses " + ", ".join(problems) + ", which the model does not implement")
    return Config(
        vocab_size=hf["vocab_size"], n_layer=hf["num_hidden_layers"], n_head=hf["num_attention_heads"],
        n_kv_head=hf.get("num_key_value_heads") or hf["num_attention_heads"], d_model=hf["hidden_size"],
        d_mlp=hf["intermediate_size"], max_seq_len=hf.get("max_position_embeddings", 2048),
        rope_base=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))), pos_emb="rope",
        qk_norm=kind == "qwen3", tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)), init_std=float(hf.get("initializer_range", 0.02)),
    )


def import_hf(directory: str | Path, dtype: torch.dtype = torch.float32, kernels: str = "auto") -> Transformer:
    """A Transformer with the weights of a Hugging Face Llama/Qwen3 checkpoint directory."""
    directory = Path(directory)
    cfg = config_from_hf(json.loads((directory / "config.json").read_text()))
    cfg.kernels = kernels
    with torch.device("meta"):
        model = Transformer(cfg)
    tensors = _load_tensors(directory)
    state = {from_hf_name(k): v.to(dtype) for k, v in tensors.items()}
    if cfg.tie_embeddings:
        state.pop("lm_head.weight", None)  # some tied exports still carry a copy
    expected = {k for k in model.state_dict() if not (cfg.tie_embeddings and k == "lm_head.weight")}
    missing, unexpected = expected - state.keys(), state.keys() - expected
    if missing or unexpected:
        raise ValueError(f"import_hf: {directory}: missing tensors {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    model.load_state_dict(state, strict=False, assign=True)
    if cfg.tie_embeddings:
        model.lm_head.weight = model.embed.weight
    model.build_position_tables()  # they were made on the meta device; derived, never saved
    return model.to(dtype)
