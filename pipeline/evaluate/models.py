"""Load a model the DAG produced (or any Hugging Face model directory) as an evaluator ``LM``.

Two ways in, same interface (``lm.CausalLM``, or ``lm.Seq2SeqLM`` for an encoder-decoder):

    native  our ``pipeline.model.Transformer`` (or ``EncoderDecoder``) from ``model.safetensors``
            + its config, called directly (no conversion, the fast path); a causal decoder
            generates through the inference engine (engine_lm.py)
    hf      a transformers ``AutoModelForCausalLM`` directory (``hf/`` inside a pretrain stage
            directory, or any exported/fine-tuned/compressed model), or an
            ``AutoModelForSeq2SeqLM`` one (T5) when its config says ``is_encoder_decoder``

``auto`` takes the native model when the directory has one and pipeline.model can build it,
else the HF export.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.evaluate.lm import CausalLM, HFTokenizer, Seq2SeqLM, Tokenizer, logits_fn
from pipeline.core.errors import StageError
from pipeline.model.io import is_model_dir

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
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise StageError(f"{path} is not a Hugging Face model directory (no config.json)")
    tok = AutoTokenizer.from_pretrained(str(path))
    if AutoConfig.from_pretrained(str(path)).is_encoder_decoder:
        from transformers import AutoModelForSeq2SeqLM

        model = AutoModelForSeq2SeqLM.from_pretrained(str(path), dtype=getattr(torch, dtype)).to(device).eval()
        return Seq2SeqLM(lambda enc, mask, dec: model(input_ids=enc, attention_mask=mask, decoder_input_ids=dec).logits,
                         HFTokenizer(tok), max_length or _hf_max_length(model.config, tok),
                         model.config.decoder_start_token_id, batch_size=batch_size, device=device)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype)).to(device).eval()
    return CausalLM(logits_fn(model), HFTokenizer(tok), max_length or _hf_max_length(model.config, tok),
                    batch_size=batch_size, device=device)


def load_native(path: Path, batch_size: int = 16, device: str = "cpu", max_length: int = 0) -> CausalLM:
    """Our Transformer from a model directory (pipeline/model/io.py), loaded strictly."""
    from tokenizers import Tokenizer as RawTokenizer

    from pipeline.model.io import TOKENIZER, TOKENIZER_META, load_model, special_token_ids

    model = load_model(path, device, archs=("decoder", "encoder_decoder"))
    ids = special_token_ids(path)
    tok = Tokenizer(RawTokenizer.from_file(str(Path(path) / TOKENIZER)), ids.get("bos"), ids.get("eos"))
    length = max_length or model.cfg.max_seq_len
    if model.cfg.arch == "encoder_decoder":  # T5's decoder starts from the pad token
        if ids.get("pad") is None:
            raise StageError(f"{path}: an encoder-decoder needs the pad id (its decoder start) in {TOKENIZER_META}")
        return Seq2SeqLM(lambda enc, mask, dec: model(enc, dec, enc_mask=mask)[0], tok, length, ids["pad"],
                         batch_size=batch_size, device=device)
    if model.cfg.attention == "prefix":  # its contexts are bidirectional prefixes: the engine's are causal
        return CausalLM(logits_fn(model), tok, length, batch_size=batch_size, device=device, prefix_context=True)
    from pipeline.evaluate.engine_lm import EngineLM

    return EngineLM(model, tok, length, batch_size=batch_size, device=device, fuse=True)  # loaded here, for eval only


def load_lm(path: Path, source: str = "auto", batch_size: int = 16, device: str = "cpu", max_length: int = 0) -> tuple[CausalLM, str]:
    """(LM, how it was loaded) for a model directory; ``source`` is auto | native | hf."""
    path = Path(path)
    if source not in ("auto", "native", "hf"):
        raise StageError(f"evaluate.model_source={source!r}: choose auto, native or hf")
    hf_dir = path / "hf" if (path / "hf" / "config.json").is_file() else path
    if source == "native" or (source == "auto" and is_model_dir(path)):
        return load_native(path, batch_size, device, max_length), "native"
    if not (hf_dir / "config.json").is_file():
        raise StageError(f"{path}: no model found (neither model.safetensors + config nor an hf/ export)")
    return load_hf(hf_dir, batch_size, device, max_length), "hf"


def chat_format(path: Path, source: str):
    """(conversation -> prompt text, ids that end a reply) from the model's chat template, as
    lm-eval's ``--apply_chat_template``: our tokenizer's template (pipeline/core/chat.py) for
    a native model, the export's own tokenizer and generation config for a HF one."""
    path = Path(path)
    if source == "native":
        from pipeline.core import chat

        tok = chat.hf_tokenizer(path)
        end = chat.end_token(path)
        stops = {tok.convert_tokens_to_ids(end)} if end else set()
    else:
        from transformers import AutoTokenizer, GenerationConfig

        hf_dir = path / "hf" if (path / "hf" / "config.json").is_file() else path
        tok = AutoTokenizer.from_pretrained(str(hf_dir))
        if not tok.chat_template:
            raise StageError(f"{hf_dir}: the tokenizer has no chat template; evaluate.apply_chat_template needs one")
        try:
            eos = GenerationConfig.from_pretrained(str(hf_dir)).eos_token_id
        except OSError:  # no generation_config.json
            eos = None
        stops = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    return (lambda messages: tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)), stops
