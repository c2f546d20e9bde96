"""Train a byte-level BPE tokenizer with Hugging Face ``tokenizers``.

Byte-level (GPT-2, Llama 3): every byte is in the base alphabet, so any text encodes and
decodes back exactly — no unknown token, and bits-per-byte is well defined. The pre-tokenizer
splits text into words, numbers and punctuation runs before merges, so merges never cross
those boundaries.
"""
from __future__ import annotations

from typing import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

# Llama 3's split (the GPT-4 cl100k pattern in a form Oniguruma accepts): numbers in groups of
# at most three digits, case-insensitive contractions, newlines kept apart from other spaces.
GPT4_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PRE_TOKENIZERS = ("gpt4", "gpt2")


def pre_tokenizer(name: str):
    if name == "gpt2":  # GPT-2's regex, built into ByteLevel
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if name == "gpt4":
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(GPT4_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    raise ValueError(f"tokenize.pre_tokenizer must be one of {'|'.join(PRE_TOKENIZERS)}, got {name!r}")


def train_bpe(texts: Iterable[str], vocab_size: int, special_tokens: list[str], pre: str,
              min_frequency: int = 2, bos_token: str | None = None, progress: bool = False,
              length: int | None = None) -> Tokenizer:
    """A byte-level BPE tokenizer of at most ``vocab_size`` ids; specials get the first ids.

    With ``bos_token`` the post-processor prepends it, so ``encode(text)`` (and Hugging Face's
    tokenizer built from this file) returns ``[bos] + tokens``, as the model was trained.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer(pre)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=progress,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=length)
    if bos_token is not None:
        bos = tok.token_to_id(bos_token)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos_token} $A", pair=f"{bos_token} $A {bos_token} $B:1",
            special_tokens=[(bos_token, bos)],
        )
    return tok
