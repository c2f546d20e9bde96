"""Load a model the DAG produced (or any Hugging Face model directory) as an evaluator ``LM``.

Two ways in, same interface (``lm.CausalLM``):

    native  our ``pipeline.model.Transformer`` from ``model.safetensors`` + its config, called
            directly (no conversion, the fast path)
    hf      a transformers ``AutoModelForCausalLM`` directory (``hf/`` inside a pretrain stage
            directory, or any exported/fine-tuned/compressed model)

``auto`` takes the native model when the directory has one and pipeline.model can build it,
else the HF export.
"""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.evaluate.lm import CausalLM, HFTokenizer, Tokenizer, logits_fn
from pipeline.stage import StageError

DEFAULT_MAX_LENGTH = 2048  # lm-eval's fallback when neither config nor tokenizer says


def _hf_max_length(config, tokenizer) -> int:
    """lm-eval's resolve_max_length: text_config, then the config, then the tokenizer."""
    for cfg in (getattr(config, "text_config", None), config):
        for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
            if cfg is not None and getattr(cfg, attr, None):
                return int(getattr(cfg, attr))
    limit = getattr(tokenizer, "model_max_length", None)
    if limit and limit < 1e29:
        return int(limit)
    return DEFAULT_MAX_LENGTH


def _threads(threads: int) -> None:
    import torch

    if threads > 0:
        torch.set_num_threads(threads)


def load_hf(path: Path, batch_size: int = 16, device: str = "cpu", max_length: int = 0, dtype: str = "float32") -> CausalLM:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise StageError(f"{path} is not a Hugging Face model directory (no config.json)")
    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype)).to(device).eval()
    return CausalLM(logits_fn(model), HFTokenizer(tok), max_length or _hf_max_length(model.config, tok),
                    batch_size=batch_size, device=device)


def _native_files(path: Path) -> tuple[Path, Path, Path] | None:
    weights, config, tokenizer = path / "model.safetensors", path / "model_config.json", path / "tokenizer.json"
    if not config.is_file():
        config = path / "config.json"
    if weights.is_file() and config.is_file() and tokenizer.is_file():
        return weights, config, tokenizer
    return None


def load_native(path: Path, batch_size: int = 16, device: str = "cpu", max_length: int = 0) -> CausalLM:
    """Our Transformer: model.safetensors + its Config (json) + tokenizer.json."""
    import torch
    from safetensors.torch import load_file

    from pipeline.model import Config, Transformer

    files = _native_files(Path(path))
    if files is None:
        raise StageError(f"{path}: no native model (model.safetensors, model_config.json, tokenizer.json)")
    weights, config, tokenizer = files
    raw = json.loads(config.read_text())
    raw = raw.get("model", raw)
    fields = set(Config.__dataclass_fields__)
    cfg = Config(**{k: v for k, v in raw.items() if k in fields})
    model = Transformer(cfg)
    model.load_state_dict(load_file(str(weights)), strict=False)
    model.to(device).eval()
    meta = Path(path) / "tokenizer_meta.json"  # the tokenize stage's meta.json, copied by pretrain
    ids = json.loads(meta.read_text()).get("special_tokens", {}) if meta.is_file() else {}
    from tokenizers import Tokenizer as RawTokenizer

    tok = Tokenizer(RawTokenizer.from_file(str(tokenizer)), ids.get("bos"), ids.get("eos"))
    return CausalLM(logits_fn(model), tok, max_length or cfg.max_seq_len, batch_size=batch_size, device=device)


def load_lm(path: Path, source: str = "auto", batch_size: int = 16, device: str = "cpu", max_length: int = 0) -> tuple[CausalLM, str]:
    """(LM, how it was loaded) for a model directory; ``source`` is auto | native | hf."""
    path = Path(path)
    if source not in ("auto", "native", "hf"):
        raise StageError(f"evaluate.model_source={source!r}: choose auto, native or hf")
    hf_dir = path / "hf" if (path / "hf" / "config.json").is_file() else path
    if source == "native" or (source == "auto" and _native_files(path) is not None):
        try:
            return load_native(path, batch_size, device, max_length), "native"
        except (ImportError, TypeError, KeyError, RuntimeError) as err:
            if source == "native":
                raise StageError(f"{path}: cannot load the native model: {type(err).__name__}: {err}") from None
    if not (hf_dir / "config.json").is_file():
        raise StageError(f"{path}: no model found (neither model.safetensors + config nor an hf/ export)")
    return load_hf(hf_dir, batch_size, device, max_length), "hf"
