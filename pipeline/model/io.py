"""A model directory: what every stage that makes a model writes, and every stage that reads
one loads (pretrain, fine-tuning, compression, evaluation, inference).

    model.safetensors      weights (safetensors: loading never runs code from the file)
    model_config.json      pipeline.model.Config as JSON
    tokenizer.json         the tokenizer (Hugging Face tokenizers), chat template included once set
    tokenizer_meta.json    the tokenize stage's meta.json: special-token ids and counts
    hf/                    the transformers export (LlamaForCausalLM, Qwen3ForCausalLM with qk-norm,
                           T5ForConditionalGeneration for model.arch=encoder_decoder)
    compression.json       compressed models only: the quantized / low-rank layers and shared blocks

    save_model_dir(out, model, tokenizer_json, tokenizer_meta)
    model = load_model("results/pretrain/<key>")            # strict: every tensor accounted for
    model = load_model(path, archs=("decoder", "encoder_decoder"))   # a reader of both families
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

from pipeline.core.errors import StageError
from pipeline.model.config import Config

WEIGHTS, CONFIG, TOKENIZER, TOKENIZER_META, HF_DIR = (
    "model.safetensors", "model_config.json", "tokenizer.json", "tokenizer_meta.json", "hf")
COMPRESSION = "compression.json"  # compress stage: methods, settings, which layers are replaced


def is_model_dir(path) -> bool:
    path = Path(path)
    return all((path / name).is_file() for name in (WEIGHTS, CONFIG, TOKENIZER))


def save_weights(state: dict, path: Path, metadata: dict | None = None) -> None:
    """safetensors refuses tensors that share memory (tied embeddings): store each once and
    record the other names as aliases in the header."""
    from safetensors.torch import save_file

    unique, aliases, by_ptr = {}, {}, {}
    for name, t in state.items():
        key = (t.data_ptr(), t.shape, t.dtype) if t.numel() else None
        if key is not None and key in by_ptr:
            aliases[name] = by_ptr[key]
            continue
        if key is not None:
            by_ptr[key] = name
        unique[name] = t.detach().contiguous().cpu()
    meta = {"aliases": json.dumps(aliases), **{k: str(v) for k, v in (metadata or {}).items()}}
    save_file(unique, str(path), metadata=meta)


def load_weights(path: Path) -> dict:
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
        with safe_open(str(path), "pt") as f:
            aliases = json.loads((f.metadata() or {}).get("aliases", "{}"))
    except Exception as err:  # safetensors raises its own types for truncated/corrupt headers
        raise StageError(f"{path}: not a readable safetensors file ({type(err).__name__}: {err})") from None
    for name, target in aliases.items():
        state[name] = state[target]
    return state


def load_config(path) -> Config:
    """The model's Config from ``model_config.json``; unknown fields are an error naming them."""
    file = Path(path) / CONFIG
    if not file.is_file():
        raise StageError(f"{path}: no {CONFIG}; is it a model directory (pretrain, finetune, compress output)?")
    raw = json.loads(file.read_text())
    unknown = sorted(set(raw) - set(Config.__dataclass_fields__))
    if unknown:
        raise StageError(f"{file}: unknown model config field(s) {unknown}: written by another version of lmdag?")
    return Config(**raw)


def load_state_strict(model, state: dict, where) -> None:
    """Load every tensor or fail naming the missing and unexpected ones: a model must never be
    left with silently random weights."""
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise StageError(f"{where}: weights do not match the model config: missing {missing[:8]}"
                         f"{' ...' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}"
                         f"{' ...' if len(unexpected) > 8 else ''}")
    for name, tensor in model.state_dict().items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise StageError(f"{where}: tensor {name} has shape {tuple(state[name].shape)}, "
                             f"the config says {tuple(tensor.shape)}")
    model.load_state_dict(state, strict=True)


def load_model(path, device: str = "cpu", kernels: str | None = None, archs: tuple[str, ...] = ("decoder",)):
    """Our model from a model directory, in eval mode. ``archs``: the architectures the caller
    can use; the decoder-only readers (fine-tuning, compression, GGUF, the inference engine)
    keep the default, so an encoder-decoder is refused before any work, saying so."""
    from pipeline.model import build

    path = Path(path)
    cfg = load_config(path)
    if cfg.arch not in archs:
        raise StageError(f"{path} holds an {cfg.arch} model (model.arch={cfg.arch}) and this step reads "
                         f"{' or '.join(archs)} models only: fine-tuning, compression, GGUF export and the "
                         f"inference engine take decoder models; evaluate scores encoder-decoders")
    if kernels is not None:
        cfg.kernels = kernels
    model = build(cfg)
    layout = load_compression(path)
    if layout:  # compressed: swap in the quantized / low-rank modules the weights were saved from
        from pipeline.model.quantized import apply_layout, tie_blocks

        try:
            apply_layout(model, layout, path / COMPRESSION)
        except ValueError as err:
            raise StageError(str(err)) from None
    load_state_strict(model, load_weights(path / WEIGHTS), path / WEIGHTS)
    if layout.get("shared_blocks"):
        tie_blocks(model, layout["shared_blocks"])
    return model.to(device).eval()


def load_compression(path) -> dict:
    """compression.json of a compressed model directory ({} for an uncompressed one)."""
    file = Path(path) / COMPRESSION
    return json.loads(file.read_text()) if file.is_file() else {}


def special_token_ids(path) -> dict:
    """bos/eos/pad/chat ids from tokenizer_meta.json ({} when the directory has none)."""
    meta = Path(path) / TOKENIZER_META
    return json.loads(meta.read_text()).get("special_tokens", {}) if meta.is_file() else {}


def save_model_dir(out, model, tokenizer_json, tokenizer_meta=None, hf: bool = True,
                   state: dict | None = None, log=None) -> Path:
    """Write a model directory; ``state`` (default: the model's own) are the weights saved."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_weights(state if state is not None else model.state_dict(), out / WEIGHTS, {"format": "pt"})
    (out / CONFIG).write_text(json.dumps(asdict(model.cfg), indent=2))
    if Path(tokenizer_json).resolve() != (out / TOKENIZER).resolve():
        shutil.copy(tokenizer_json, out / TOKENIZER)
    if tokenizer_meta is not None:
        if isinstance(tokenizer_meta, dict):
            (out / TOKENIZER_META).write_text(json.dumps(tokenizer_meta, indent=2, ensure_ascii=False))
        elif Path(tokenizer_meta).resolve() != (out / TOKENIZER_META).resolve():
            shutil.copy(tokenizer_meta, out / TOKENIZER_META)
    if hf:
        import torch

        from pipeline.model.hf import export_hf

        with torch.no_grad():
            export_hf(model.cpu(), out / TOKENIZER, out / HF_DIR)
    return out
