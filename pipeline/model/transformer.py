"""A decoder-only transformer, readable top to bottom (config, blocks, model), like nanoGPT.

Llama-style by default: RMSNorm before each sublayer, rotary position embeddings, SwiGLU MLP,
grouped-query attention, no biases, tied input/output embeddings. The options a sweep can
compare (the shapes the LLM surveys contrast):

    pos_emb    rope | sinusoidal   (sinusoidal = absolute positions added to the embeddings,
                                    as in the original Transformer)
    attention  causal | prefix     (prefix: bidirectional over the first ``prefix_len`` tokens,
                                    causal after, as PaLM's/GLM's prefix decoders; pass
                                    ``prefix_len`` to forward, an int or one per row: the
                                    training objective draws it, train.objective)
    qk_norm    RMSNorm on each query/key head before RoPE (OLMo 2, Qwen3: steadier logits)
    tie_embeddings   share the token embedding with the output head (GPT-2, Llama 3.2 1B)
    prompt_tokens    a soft prompt: n learned input embeddings before the text (prompt tuning)
    prefix_tokens    n learned keys and values before the text in every layer (prefix tuning /
                     P-tuning v2); the text attends to them as to a fully visible prefix

The hot paths (attention, RMSNorm, RoPE, SwiGLU, the loss) go through ``kernels``: plain
PyTorch on CPU, Triton on CUDA, chosen by ``kernels: auto|triton|torch``.

    from pipeline.model import Config, Transformer
    model = Transformer(Config(vocab_size=4096))
    logits, _ = model(idx)                  # (B, T, V)
    _, loss = model(idx, targets)           # mean cross-entropy, logits never materialised
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import kernels
from pipeline.model.config import Config


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return kernels.rms_norm(x, self.weight, self.eps)


class Attention(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        hd = cfg.head_dim
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_head * hd, bias=False)
        self.k_proj = nn.Linear(cfg.d_model, cfg.n_kv_head * hd, bias=False)
        self.v_proj = nn.Linear(cfg.d_model, cfg.n_kv_head * hd, bias=False)
        self.o_proj = nn.Linear(cfg.n_head * hd, cfg.d_model, bias=False)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(hd, cfg.norm_eps)
            self.k_norm = RMSNorm(hd, cfg.norm_eps)
        if cfg.prefix_tokens:  # keys as the cache holds them: after RoPE, so they have no position
            self.prefix_k = nn.Parameter(torch.empty(cfg.n_kv_head, cfg.prefix_tokens, hd))
            self.prefix_v = nn.Parameter(torch.empty(cfg.n_kv_head, cfg.prefix_tokens, hd))

    def forward(self, x, rotary, prefix_len):
        B, T, _ = x.shape
        hd = self.cfg.head_dim
        q = self.q_proj(x).view(B, T, self.cfg.n_head, hd)
        k = self.k_proj(x).view(B, T, self.cfg.n_kv_head, hd)
        v = self.v_proj(x).view(B, T, self.cfg.n_kv_head, hd).transpose(1, 2)
        if self.cfg.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # (B, H, T, hd)
        if rotary is not None:
            q, k = kernels.apply_rotary(q, k, *rotary)
        if self.cfg.prefix_tokens:  # the prefix slots' keys and values are the learned ones
            k, v = self.with_prefix(k), self.with_prefix(v, values=True)
        y = kernels.attention(q, k, v, causal=True, prefix_len=prefix_len)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))

    def with_prefix(self, t, values: bool = False):
        """t (B, Hkv, T, hd) with its first prefix_tokens positions replaced by the learned ones."""
        learned = (self.prefix_v if values else self.prefix_k).to(t.dtype)
        P = learned.shape[1]
        return torch.cat((learned.expand(t.shape[0], -1, -1, -1), t[:, :, P:]), dim=2)


class MLP(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.d_model, cfg.d_mlp, bias=False)
        self.up_proj = nn.Linear(cfg.d_model, cfg.d_mlp, bias=False)
        self.down_proj = nn.Linear(cfg.d_mlp, cfg.d_model, bias=False)

    def forward(self, x):
        return self.down_proj(kernels.swiglu(self.gate_proj(x), self.up_proj(x)))


class Block(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, rotary, prefix_len):
        x = x + self.attn(self.attn_norm(x), rotary, prefix_len)
        return x + self.mlp(self.mlp_norm(x))


def sinusoidal_table(T: int, d: int) -> torch.Tensor:
    """The original Transformer's absolute positions: sin on even, cos on odd channels."""
    pos = torch.arange(T, dtype=torch.float32)[:, None]
    inv = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    table = torch.zeros(T, d)
    table[:, 0::2] = torch.sin(pos * inv)
    table[:, 1::2] = torch.cos(pos * inv)
    return table


class Transformer(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg.validate()
        if cfg.arch != "decoder":
            raise ValueError(f"Transformer is the decoder-only model; arch={cfg.arch!r} is built by "
                             "pipeline.model.build (encoder_decoder.py)")
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        if cfg.prompt_tokens:
            self.prompt = nn.Parameter(torch.empty(cfg.prompt_tokens, cfg.d_model))
        self.build_position_tables()
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, mean=0.0, std=cfg.init_std / math.sqrt(2 * cfg.n_layer))
            elif name.endswith(("prompt", "prefix_k", "prefix_v")):  # fine-tuning starts them from real text
                nn.init.normal_(p, mean=0.0, std=cfg.init_std)

    def build_position_tables(self, device=None):
        """RoPE cos/sin or sinusoidal tables: derived from the config, never trained or saved.
        Virtual tokens take the first positions, so the tables reach max_seq_len past them."""
        cfg = self.cfg
        T = cfg.max_seq_len + cfg.virtual_tokens
        if cfg.pos_emb == "rope":
            cos, sin = kernels.rotary_cos_sin(T, cfg.head_dim, cfg.rope_base, device=device)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        else:
            table = sinusoidal_table(T, cfg.d_model).to(device)
            self.register_buffer("pos_table", table, persistent=False)

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.cfg.init_std)

    # -- sizes ------------------------------------------------------------------------------

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters, tied ones counted once; ``non_embedding`` leaves out the token embedding
        (and an untied output head), as Kaplan et al.'s scaling laws count N."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.embed.weight.numel()
            if not self.cfg.tie_embeddings:
                n -= self.lm_head.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token (forward + backward), as PaLM's appendix B / nanoGPT's MFU:
        6 x (parameters used in matmuls: every block weight and the output head, not the
        embedding lookup) + 12 x n_layer x d_model x seq_len for attention scores and values."""
        T = seq_len or self.cfg.max_seq_len
        matmul_params = sum(p.numel() for n, p in self.blocks.named_parameters() if p.dim() == 2)
        matmul_params += self.lm_head.weight.numel()
        return 6 * matmul_params + 12 * self.cfg.n_layer * self.cfg.n_head * self.cfg.head_dim * T

    # -- forward ----------------------------------------------------------------------------

    def hidden_states(self, idx: torch.Tensor, prefix_len=None) -> torch.Tensor:
        """Final-norm hidden states (B, T, d_model) for token ids ``idx`` (B, T)."""
        kernels.set_backend(self.cfg.kernels)
        B, T = idx.shape
        if T > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {T} exceeds max_seq_len {self.cfg.max_seq_len}")
        if prefix_len is not None and self.cfg.attention != "prefix":
            raise ValueError("prefix_len given but the model was configured with attention=causal")
        x = self.embed(idx)
        n = self.cfg.virtual_tokens
        if n:  # the virtual tokens go first; the text's own positions start after them
            x = torch.cat((self.virtual_inputs(B, x.dtype), x), dim=1)
            prefix_len = None if prefix_len is None else prefix_len + n
        rotary = None
        if self.cfg.pos_emb == "rope":
            rotary = (self.rope_cos[:n + T], self.rope_sin[:n + T])
        else:
            x = x + self.pos_table[:n + T].to(x.dtype)
        for block in self.blocks:
            x = block(x, rotary, prefix_len)
        return self.norm(x[:, n:])

    def virtual_inputs(self, batch: int, dtype) -> torch.Tensor:
        """Inputs (B, virtual_tokens, d_model) of the virtual positions: zeros in the prefix
        slots (every layer's keys and values there are replaced), then the soft prompt."""
        cfg = self.cfg
        parts = [self.embed.weight.new_zeros(cfg.prefix_tokens, cfg.d_model)]
        if cfg.prompt_tokens:
            parts.append(self.prompt)
        return torch.cat(parts).to(dtype).expand(batch, -1, -1)

    def forward(self, idx, targets=None, prefix_len=None):
        """-> (logits (B, T, V), None) without targets; (None, mean loss) with them.

        ``targets`` (B, T) uses -100 for positions left out of the loss. ``prefix_len`` (int or
        (B,) tensor, attention=prefix only) makes the first tokens attend to each other freely.
        """
        h = self.hidden_states(idx, prefix_len)
        if targets is None:
            return self.lm_head(h), None
        h, targets = h.reshape(-1, h.shape[-1]), targets.reshape(-1)
        if h.device.type == "cpu":  # rows out of the loss (a chat's prompt: ~90% of an SFT batch) skip
            keep = targets != -100  # the head; on a GPU the compaction would stall the host each step
            h, targets = h[keep], targets[keep]
        # The loss kernel folds the output projection in: no (B*T, V) logits tensor is kept.
        loss = kernels.linear_cross_entropy(h, self.lm_head.weight, targets, ignore_index=-100)
        return None, loss

    @torch.no_grad()
    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None, eos_id: int | None = None):
        """Sample ``max_new_tokens`` continuations of ``idx`` (B, T); temperature 0 = greedy.
        No KV cache: the context is re-run each step (cropped to max_seq_len), as in nanoGPT."""
        for _ in range(max_new_tokens):
            ctx = idx[:, -self.cfg.max_seq_len:]
            logits = self.lm_head(self.hidden_states(ctx)[:, -1, :]).float()
            nxt = sample_next(logits, temperature, top_k, generator)
            idx = torch.cat((idx, nxt), dim=1)
            if eos_id is not None and bool((nxt == eos_id).all()):
                break
        return idx


def sample_next(logits: torch.Tensor, temperature: float, top_k: int | None, generator=None) -> torch.Tensor:
    """Next tokens (B, 1) from last-position logits (B, V): argmax at temperature 0, else a draw
    from the top-k of the tempered distribution."""
    if temperature == 0:
        return logits.argmax(-1, keepdim=True)
    logits = logits / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)
