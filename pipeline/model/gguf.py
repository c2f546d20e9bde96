"""Export a model directory to GGUF, the file llama.cpp (and Ollama, LM Studio...) runs.

    from pipeline.model.gguf import export_gguf
    export_gguf("results/pretrain/<key>", "model.gguf")           # f32; dtype="f16" | "q8_0"
    llama-cli -m model.gguf -p "Once upon a time"                 # or llama_cpp.Llama("model.gguf")

Written with the ``gguf`` package (llama.cpp's own writer), the way llama.cpp's
convert_hf_to_gguf.py writes a Llama (or, with qk-norm, a Qwen3) checkpoint:

- tensors renamed to llama.cpp's (token_embd, blk.N.attn_q, ...). For the llama architecture
  the rows of q/k are permuted: our RoPE rotates the two halves of a head (rotate_half, as
  Hugging Face's Llama), llama.cpp's llama rotates adjacent pairs; the permutation makes the
  two agree (Qwen3 uses the halves convention in llama.cpp too, so it is left as is);
- the tokenizer as a GPT-2-style byte-level BPE: vocabulary and merges from tokenizer.json,
  special tokens as control tokens, ids past the tokenizer's size as unused padding, and
  ``tokenizer.ggml.pre`` naming the split regex llama.cpp must use (``llama-bpe`` for our
  gpt4 pre-tokenizer, ``gpt-2`` for gpt2), so llama.cpp tokenizes text as we do;
- context length, RoPE base, norm epsilon, head counts, BOS/EOS/PAD ids, add-BOS.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.core.errors import StageError

if TYPE_CHECKING:  # only annotations: checking a serve config must not import torch
    import torch

DTYPES = ("f32", "f16", "q8_0")
_LAYER = {"attn_norm.weight": "attn_norm", "attn.q_proj.weight": "attn_q", "attn.k_proj.weight": "attn_k",
          "attn.v_proj.weight": "attn_v", "attn.o_proj.weight": "attn_output", "attn.q_norm.weight": "attn_q_norm",
          "attn.k_norm.weight": "attn_k_norm", "mlp_norm.weight": "ffn_norm", "mlp.gate_proj.weight": "ffn_gate",
          "mlp.up_proj.weight": "ffn_up", "mlp.down_proj.weight": "ffn_down"}
_TOP = {"embed.weight": "token_embd.weight", "norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}


def gguf_name(name: str) -> str:
    if name in _TOP:
        return _TOP[name]
    _, layer, rest = name.split(".", 2)
    return f"blk.{layer}.{_LAYER[rest]}.weight"


def permute_for_llama_rope(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Rows of a q/k projection from rotate-half order to llama.cpp's adjacent-pair order
    (llama.cpp's convert_hf_to_gguf LlamaModel.permute)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def pre_tokenizer_name(tokenizer: dict) -> str:
    """llama.cpp's name for the split regex of our tokenizer.json (tokenize/bpe.py builds both:
    GPT-2's regex inside ByteLevel, or Llama 3's split, recognised by its 1-3 digit groups)."""
    pre = tokenizer.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else []
    if (len(steps) == 2 and steps[0].get("type") == "Split" and r"\p{N}{1,3}" in steps[0].get("pattern", {}).get("Regex", "")
            and steps[1].get("type") == "ByteLevel" and not steps[1].get("use_regex", True)):
        return "llama-bpe"
    raise StageError("GGUF export: the tokenizer's pre-tokenizer is neither the gpt4 nor the gpt2 split "
                     "(tokenize.pre_tokenizer); llama.cpp would tokenize differently")


def tokenizer_fields(tokenizer_json: Path, vocab_size: int) -> dict:
    """Tokens, their types and merges, padded to the model's vocabulary."""
    import gguf

    tok = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
    if tok["model"].get("type") != "BPE":
        raise StageError(f"{tokenizer_json}: GGUF export needs a BPE tokenizer, got {tok['model'].get('type')}")
    by_id = {i: t for t, i in tok["model"]["vocab"].items()}
    special = {a["id"] for a in tok.get("added_tokens", []) if a.get("special")}
    by_id.update({a["id"]: a["content"] for a in tok.get("added_tokens", [])})
    if max(by_id) >= vocab_size:
        raise StageError(f"{tokenizer_json}: token id {max(by_id)} does not fit the model's vocab_size {vocab_size}")
    tokens, types = [], []
    for i in range(vocab_size):
        if i in by_id:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL)
        else:  # the model's vocabulary is rounded up past the tokenizer's: never produced by it
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"].get("merges", [])]
    return {"tokens": tokens, "types": types, "merges": merges, "pre": pre_tokenizer_name(tok)}


def _tensor(name: str, t: torch.Tensor, dtype: str):
    """(array, raw dtype or None) in the file's format: norms stay f32 (llama.cpp's rule)."""
    import gguf

    a = t.detach().float().cpu().numpy()
    if a.ndim == 1 or dtype == "f32":
        return a.astype(np.float32), None
    if dtype == "q8_0" and a.shape[-1] % 32 == 0:
        return gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q8_0), gguf.GGMLQuantizationType.Q8_0
    return a.astype(np.float16), None


def _metadata(writer, cfg, name: str, dtype: str) -> None:
    import gguf

    writer.add_name(name)
    writer.add_context_length(cfg.max_seq_len)
    writer.add_embedding_length(cfg.d_model)
    writer.add_block_count(cfg.n_layer)
    writer.add_feed_forward_length(cfg.d_mlp)
    writer.add_head_count(cfg.n_head)
    writer.add_head_count_kv(cfg.n_kv_head)
    writer.add_key_length(cfg.head_dim)
    writer.add_value_length(cfg.head_dim)
    writer.add_rope_dimension_count(cfg.head_dim)
    writer.add_rope_freq_base(cfg.rope_base)
    writer.add_layer_norm_rms_eps(cfg.norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                          "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype])


def _tokenizer(writer, model_dir: Path, cfg) -> None:
    from pipeline.model.io import TOKENIZER, special_token_ids

    fields = tokenizer_fields(model_dir / TOKENIZER, cfg.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(fields["pre"])
    writer.add_token_list(fields["tokens"])
    writer.add_token_types(fields["types"])
    writer.add_token_merges(fields["merges"])
    ids = special_token_ids(model_dir)
    for key, add in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id), ("pad", writer.add_pad_token_id)):
        if ids.get(key) is not None:
            add(ids[key])
    writer.add_add_bos_token(ids.get("bos") is not None)  # training documents start with BOS
    writer.add_add_eos_token(False)
    from pipeline.core.chat import find_template

    template = find_template(model_dir)
    if template:
        writer.add_chat_template(template)


def export_gguf(model_dir, out, dtype: str = "f32", name: str | None = None) -> Path:
    """Write the model directory's weights, tokenizer and config as one GGUF file."""
    import gguf

    from pipeline.model.io import load_model

    if dtype not in DTYPES:
        raise StageError(f"GGUF export: dtype must be one of {'|'.join(DTYPES)}, got {dtype!r}")
    model_dir, out = Path(model_dir), Path(out)
    model = load_model(model_dir)
    cfg = model.cfg
    if cfg.pos_emb != "rope":
        raise StageError(f"{model_dir}: pos_emb={cfg.pos_emb} has no llama.cpp equivalent; only rope models export")
    arch = "qwen3" if cfg.qk_norm else "llama"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), arch)
    _metadata(writer, cfg, name or model_dir.resolve().name, dtype)
    _tokenizer(writer, model_dir, cfg)
    for key, tensor in model.state_dict().items():
        if key == "lm_head.weight" and cfg.tie_embeddings:
            continue  # llama.cpp reuses token_embd when output.weight is absent
        if arch == "llama" and key.endswith(("q_proj.weight", "k_proj.weight")):
            tensor = permute_for_llama_rope(tensor, cfg.n_head if "q_proj" in key else cfg.n_kv_head)
        array, raw = _tensor(key, tensor, dtype)
        writer.add_tensor(gguf_name(key), array, raw_dtype=raw)  # quantized: shape from the byte rows
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=False)
    writer.close()
    tmp.replace(out)  # never a half-written file under the final name
    return out
