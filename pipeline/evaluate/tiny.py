"""A tiny randomly initialised Llama and a byte-level BPE tokenizer, built on the spot.

The tests and the lm-eval agreement benchmark need a real Hugging Face model directory that
both lm-eval and our evaluator can load, with nothing fetched from a hub.
"""
from __future__ import annotations

from pathlib import Path

BOS, EOS = "<|bos|>", "<|eos|>"

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A man is sitting on a roof. He starts pulling up roofing on a roof.",
    "Question: Which technology was developed most recently?\nAnswer: cellular telephone",
    "How do I ready a guinea pig cage for its new occupants? Provide bedding made of paper strips.",
    "Sarah was a much better surgeon than Maria so she always got the harder cases.",
    "It was the best of times, it was the worst of times, it was the age of wisdom.",
    "Numbers like 12, 345 and 6789 appear in text; so do dates such as 14 December 1972.",
]


def train_tokenizer(vocab_size: int = 320, texts: list[str] | None = None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator((texts or CORPUS) * 20, trainer)
    return tok


def save_hf_model(out: Path, vocab_size: int = 320, max_length: int = 64, seed: int = 0,
                  hidden: int = 32, layers: int = 2) -> Path:
    """A random LlamaForCausalLM + tokenizer in ``out`` (transformers' from_pretrained layout)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(vocab_size)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=EOS)
    hf_tok.save_pretrained(out)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=hidden, intermediate_size=hidden * 2,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=max_length, bos_token_id=tok.token_to_id(BOS),
                      eos_token_id=tok.token_to_id(EOS), pad_token_id=tok.token_to_id(EOS),
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    # Random init at std 0.02 gives near-uniform predictions; a larger spread makes the
    # choices' log-likelihoods differ clearly, so agreement checks are not decided by ties.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    model.save_pretrained(out)
    return out
