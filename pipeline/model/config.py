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
    pos_emb: str = "rope"  # rope | sinusoidal
    qk_norm: bool = False
    tie_embeddings: bool = True
    attention: str = "causal"  # causal | prefix
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
        for key, allowed in (("pos_emb", ("rope", "sinusoidal")), ("attention", ("causal", "prefix")),
                             ("kernels", ("auto", "triton", "torch"))):
            if getattr(self, key) not in allowed:
                problems.append(f"{key} must be one of {'|'.join(allowed)}, got {getattr(self, key)!r}")
        for key in ("prompt_tokens", "prefix_tokens"):
            if getattr(self, key) < 0:
                problems.append(f"{key} must be >= 0, got {getattr(self, key)}")
        if problems:
            raise ValueError("model config: " + "; ".join(problems))
        return self
