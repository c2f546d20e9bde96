"""The model's shape and options (the top-level ``model`` config group, conf/model/ presets).

Kept apart from transformer.py so that composing a config never imports torch.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Config:
    # The tokenizer's vocabulary; presets take it from the tokenize stage (${tokenize.vocab_size}).
    vocab_size: int = 4096
    n_layer: int = 6
    n_head: int = 4
    # Key/value heads: n_head = multi-head attention, 1 = multi-query, in between = GQA (Llama 2/3).
    n_kv_head: int = 2
    # Hidden and MLP sizes are multiples of 128: GPU tiles and quantization groups need it.
    d_model: int = 128
    # SwiGLU's hidden size; ~8/3 d_model keeps the MLP's parameters at a 4x GELU MLP's (PaLM, Llama).
    d_mlp: int = 384
    max_seq_len: int = 256
    rope_base: float = 10000.0
    # rope | sinusoidal (decoder) | relative (encoder_decoder: T5's bucketed attention biases)
    pos_emb: str = "rope"
    qk_norm: bool = False
    tie_embeddings: bool = True
    attention: str = "causal"  # causal | prefix
    # decoder: the decoder-only Transformer (transformer.py); encoder_decoder: T5's layout
    # (encoder_decoder.py), a bidirectional encoder and a causal decoder with cross-attention,
    # n_layer blocks each: about the decoder's compute per token (each token crosses one stack).
    arch: str = "decoder"  # decoder | encoder_decoder
    kernels: str = "auto"  # auto | triton | torch
    norm_eps: float = 1e-5
    # GPT-2/nanoGPT init: N(0, 0.02), residual output projections scaled by 1/sqrt(2 n_layer).
    init_std: float = 0.02
    # Learned virtual tokens before every sequence (finetune method=prompt|prefix), at positions
    # [0, n) with the text from position n, as peft places them. A soft prompt (Lester et al.
    # 2021) learns their input embeddings; a prefix (Li & Liang 2021, P-tuning v2) learns
    # their keys and values in every layer. Prefix slots come first when both are set.
    prompt_tokens: int = 0
    prefix_tokens: int = 0

    @property
    def virtual_tokens(self) -> int:
        return self.prefix_tokens + self.prompt_tokens

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    def validate(self) -> "Config":
        problems = []
        if self.d_model % self.n_head:
            problems.append(f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")
        if self.n_head % self.n_kv_head:
            problems.append(f"n_head ({self.n_head}) must be a multiple of n_kv_head ({self.n_kv_head})")
        if self.pos_emb == "rope" and self.head_dim % 2:
            problems.append(f"rope needs an even head dim, got {self.head_dim}")
        for key, allowed in (("pos_emb", ("rope", "sinusoidal", "relative")), ("attention", ("causal", "prefix")),
                             ("kernels", ("auto", "triton", "torch")), ("arch", ("decoder", "encoder_decoder"))):
            if getattr(self, key) not in allowed:
                problems.append(f"{key} must be one of {'|'.join(allowed)}, got {getattr(self, key)!r}")
        problems += self._arch_problems()
        for key in ("prompt_tokens", "prefix_tokens"):
            if getattr(self, key) < 0:
                problems.append(f"{key} must be >= 0, got {getattr(self, key)}")
        if problems:
            raise ValueError("model config: " + "; ".join(problems))
        return self

    def _arch_problems(self) -> list[str]:
        """Options the chosen architecture cannot honour (each would change nothing, or break the
        Hugging Face export after training): refused with what to set instead."""
        if self.arch == "decoder":
            return ["pos_emb=relative is the encoder-decoder's (T5's position biases); a decoder takes "
                    "rope|sinusoidal"] if self.pos_emb == "relative" else []
        wrong = {"pos_emb": (self.pos_emb != "relative", "relative (T5's bucketed biases, what "
                                                         "T5ForConditionalGeneration holds)"),
                 "attention": (self.attention != "causal", "causal (the encoder is bidirectional, the "
                                                           "decoder causal; a prefix is the encoder's input)"),
                 "qk_norm": (self.qk_norm, "false (T5 has no query/key norm)"),
                 "tie_embeddings": (not self.tie_embeddings, "true (T5 shares one embedding for encoder, "
                                                              "decoder and output)"),
                 "prompt_tokens": (self.prompt_tokens != 0, "0 (virtual tokens are a decoder's)"),
                 "prefix_tokens": (self.prefix_tokens != 0, "0 (virtual tokens are a decoder's)")}
        return [f"arch=encoder_decoder needs {key}={fix}, got {getattr(self, key)!r}"
                for key, (bad, fix) in wrong.items() if bad]
