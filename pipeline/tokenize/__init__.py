"""tokenize: train a byte-level BPE tokenizer on the curated shards and encode them to token files.

Writes ``tokenizer.json`` (loads with ``transformers.PreTrainedTokenizerFast``), ``train.bin`` /
``val.bin`` (flat uint16, or uint32 above 65536 ids), ``train.idx.npy`` / ``val.idx.npy``
(document start offsets) and ``meta.json`` (dtype, special token ids, token and byte counts,
bytes per token, encode MB/s). Read them with ``pipeline.core.tokens.TokenData``.

Usage:  python -m pipeline tokenize in=my_docs.jsonl out=tok/ vocab_size=8192
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from pipeline.core import chat, docs
from pipeline.core.errors import StageError
from pipeline.core.step import Input, unkeyed
from pipeline.tokenize import bpe, encode

INPUTS = {"docs": Input("curated document shards: the tokenizer's training text, and what is encoded")}
VERSION = "1"


@dataclass
class Config:
    # 4096 suits the ~2M-parameter CPU model: at d_model 128 a bigger vocabulary would put most
    # parameters and output-layer FLOPs into the embedding for ~10% fewer tokens. GPU presets
    # use 32k-128k. uint16 token files up to 65536, uint32 above.
    vocab_size: int = 4096
    # A pair must occur this often to be merged (GPT-2/HF default 2): no merges for one-offs.
    min_frequency: int = 2
    pre_tokenizer: str = "gpt4"  # gpt4 (Llama 3 / cl100k split: digits in 1-3s) | gpt2
    bos_token: str = "<|bos|>"  # prepended to every document
    eos_token: str = "<|endoftext|>"  # closes every document (GPT-2's name)
    pad_token: str = "<|pad|>"
    # The roles fine-tuning formats chats with (Zephyr/Phi-3 style markers).
    chat_tokens: list[str] = field(default_factory=lambda: ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"])
    # Span-corruption sentinels <|sentinel_i|> (T5 has 100). At 15% noise and mean span 3 a
    # 512-token window has ~26 spans; 32 covers windows up to ~640 tokens.
    n_sentinels: int = 32
    # Text sampled (train split, in shard order) to learn the merges; BPE statistics settle
    # long before gigabytes, and training memory grows with it. 0 = all.
    train_max_bytes: int = 200_000_000
    # Validation documents by id hash: 1% of ~25 MB is ~250 KB of text, enough for a stable
    # bits-per-byte; at least min_val_docs documents so tiny corpora still get one.
    val_fraction: float = 0.01
    min_val_docs: int = 2
    workers: int = unkeyed(2)  # encoding processes
    sample_size: int = unkeyed(400)  # characters of the tokenized sample shown in the report


def special_tokens(cfg: Config) -> list[str]:
    """Specials in id order: bos, eos, pad, chat roles, sentinels (they take ids 0..n-1)."""
    sentinels = [f"<|sentinel_{i}|>" for i in range(cfg.n_sentinels)]
    tokens = [cfg.bos_token, cfg.eos_token, cfg.pad_token, *cfg.chat_tokens, *sentinels]
    dup = sorted({t for t in tokens if tokens.count(t) > 1})
    if dup:
        raise StageError(f"tokenize: special tokens must be distinct, repeated: {dup}")
    return tokens


def _check(cfg: Config) -> None:
    n_special = len(special_tokens(cfg))
    if cfg.vocab_size < 256 + n_special:
        raise StageError(
            f"tokenize.vocab_size={cfg.vocab_size} is too small: a byte-level BPE needs 256 byte "
            f"tokens plus {n_special} special tokens (lower tokenize.n_sentinels or raise vocab_size)")
    if cfg.pre_tokenizer not in bpe.PRE_TOKENIZERS:
        raise StageError(f"tokenize.pre_tokenizer must be one of {'|'.join(bpe.PRE_TOKENIZERS)}, got {cfg.pre_tokenizer!r}")
    if not 0.0 <= cfg.val_fraction < 1.0:
        raise StageError(f"tokenize.val_fraction must be in [0, 1), got {cfg.val_fraction}")


def _training_texts(shards: list[Path], val: set[str], max_bytes: int):
    """Train-split texts in shard order, up to ``max_bytes`` (validation stays unseen)."""
    seen = 0
    for shard in shards:
        table = pq.read_table(shard, columns=["id", "text"])
        for doc_id, text in zip(table.column("id").to_pylist(), table.column("text").to_pylist()):
            if not text or doc_id in val:
                continue
            yield text
            seen += len(text.encode("utf-8"))
            if max_bytes and seen >= max_bytes:
                return


def _first_val_text(shards: list[Path], val: set[str]) -> str:
    for shard in shards:
        table = pq.read_table(shard, columns=["id", "text"])
        for doc_id, text in zip(table.column("id").to_pylist(), table.column("text").to_pylist()):
            if doc_id in val and text:
                return text
    return ""


def _sample(tok, n_chars: int, text: str) -> dict:
    """A held-out text cut into its tokens, for the report."""
    enc = tok.encode(text[:n_chars], add_special_tokens=False)
    return {"text": text[:n_chars], "ids": enc.ids, "pieces": [tok.decode([i], skip_special_tokens=False) for i in enc.ids]}


def run(cfg: Config, inputs: dict[str, Path], out: Path, log) -> dict:
    _check(cfg)
    source = inputs["docs"]
    shards = docs.shard_paths(source)
    if not shards:
        raise StageError(f"tokenize: no document shards ({docs.SHARD_GLOB}) in {source}")
    ids = [i for s in shards for i in pq.read_table(s, columns=["id"]).column("id").to_pylist()]
    val = encode.val_ids(ids, cfg.val_fraction, cfg.min_val_docs)
    specials = special_tokens(cfg)

    t0 = time.time()
    tok = bpe.train_bpe(_training_texts(shards, val, cfg.train_max_bytes), cfg.vocab_size, specials,
                        cfg.pre_tokenizer, cfg.min_frequency, bos_token=cfg.bos_token,
                        progress=sys.stderr.isatty())  # tokenizers' own bar, on a terminal only (as tqdm's disable=None)
    train_s = time.time() - t0
    tok.save(str(out / "tokenizer.json"))
    log.info("trained a %d-token BPE in %.1fs", tok.get_vocab_size(), train_s)

    dtype = encode.dtype_for(cfg.vocab_size)
    t0 = time.time()
    names, parts = encode.encode_shards(shards, out / "parts", tok.to_str(), val, tok.token_to_id(cfg.eos_token),
                                        dtype, cfg.workers)
    counts = {split: encode.concatenate(names, out / "parts", out, split, dtype) for split in encode.SPLITS}
    encode_s = time.time() - t0
    shutil.rmtree(out / "parts")

    total = {k: sum(p[k] for p in parts) for k in parts[0]}
    val_text_tokens = total["val_tokens"] - 2 * total["val_docs"]  # without bos/eos
    meta = {
        "dtype": dtype.name,
        "vocab_size": cfg.vocab_size,
        "tokenizer_vocab_size": tok.get_vocab_size(),
        "document_format": "[bos] text [eos]",
        "special_tokens": {
            "bos": tok.token_to_id(cfg.bos_token), "eos": tok.token_to_id(cfg.eos_token),
            "pad": tok.token_to_id(cfg.pad_token),
            "chat": {t: tok.token_to_id(t) for t in cfg.chat_tokens},
            "sentinels": [tok.token_to_id(f"<|sentinel_{i}|>") for i in range(cfg.n_sentinels)],
        },
        "special_token_strings": {"bos": cfg.bos_token, "eos": cfg.eos_token, "pad": cfg.pad_token},
        # How conversations are written with the chat tokens (pipeline/core/chat.py); model
        # directories keep this file, so fine-tuning, evaluation and the HF export share it.
        "chat_template": chat.chat_template(cfg.chat_tokens),
        "train_docs": counts["train"][0], "val_docs": counts["val"][0],
        "train_tokens": counts["train"][1], "val_tokens": counts["val"][1],
        "train_text_bytes": total["train_bytes"], "val_text_bytes": total["val_bytes"],
        # Text bytes per text token (bos/eos left out) on held-out text: the tokenizer's compression.
        "bytes_per_token_val": round(total["val_bytes"] / max(val_text_tokens, 1), 4),
        "encode_mb_s": round(total["bytes_in"] / 1e6 / max(encode_s, 1e-9), 3),
        "tokenizer_train_s": round(train_s, 3),
        "sample": _sample(tok, cfg.sample_size, _first_val_text(shards, val)),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))
    kept = total["train_docs"] + total["val_docs"]
    return {
        "docs_in": total["docs_in"],
        "docs_kept": kept,
        "bytes_in": total["bytes_in"],
        "bytes_kept": total["train_bytes"] + total["val_bytes"],
        "dropped": {"empty": total["empty"]} if total["empty"] else {},
        **{k: meta[k] for k in ("vocab_size", "tokenizer_vocab_size", "train_tokens", "val_tokens",
                                "val_text_bytes", "bytes_per_token_val", "encode_mb_s", "tokenizer_train_s")},
    }
