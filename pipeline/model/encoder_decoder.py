"""A T5-style encoder-decoder, readable top to bottom (buckets, attention, blocks, model).

The survey's third family: a bidirectional encoder reads the input, a causal decoder writes
the target while attending to the encoder's output (cross-attention). The layout is T5 v1.1's
with this package's parts, so it exports to ``T5ForConditionalGeneration`` weight for weight:

    positions  T5's relative biases: one learned scalar per (head, distance bucket), added to
               the attention scores, shared by every layer of a stack (the encoder's buckets
               are bidirectional, the decoder's look back only); no position embedding
    blocks     pre-norm RMSNorm, self-attention, [cross-attention], SwiGLU MLP (T5's gated-silu)
    scores     q.k without 1/sqrt(head_dim): T5 folds that scale into the query's init
    output     one embedding for encoder input, decoder input and output head, the decoder's
               last hidden state scaled by d_model^-0.5 first (T5 with tied embeddings)

Grouped-query attention (n_kv_head < n_head) trains as configured; the export repeats each
key/value head for its query heads, which computes the same scores. Attention goes through
PyTorch's SDPA with the bias as an additive mask (the flash kernel takes no bias); RMSNorm,
SwiGLU and the loss go through ``kernels``.

    model = EncoderDecoder(Config(arch="encoder_decoder", pos_emb="relative", vocab_size=4096))
    logits, _ = model(enc_idx, dec_idx, enc_mask=mask)    # (B, U, V); mask (B, S), True = a token
    _, loss = model(enc_idx, dec_idx, targets)            # mean cross-entropy over targets != -100
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import kernels
from pipeline.model.config import Config
from pipeline.model.transformer import MLP, RMSNorm, sample_next

# T5's bucket layout (every released T5 checkpoint): 32 buckets, log-spaced up to 128 tokens.
NUM_BUCKETS, MAX_DISTANCE = 32, 128


def relative_buckets(relative: torch.Tensor, bidirectional: bool, num_buckets: int = NUM_BUCKETS,
                     max_distance: int = MAX_DISTANCE) -> torch.Tensor:
    """T5's bucket of each (key - query) distance: exact for the nearest half of the buckets,
    logarithmic beyond, all distances past ``max_distance`` in the last; bidirectional stacks
    give keys after the query their own half of the buckets."""
    buckets = torch.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative > 0).long() * num_buckets
        relative = relative.abs()
    else:
        relative = -torch.clamp(relative, max=0)
    max_exact = num_buckets // 2
    is_small = relative < max_exact
    large = max_exact + (torch.log(relative.float() / max_exact) / math.log(max_distance / max_exact)
                         * (num_buckets - max_exact)).long()
    large = torch.clamp(large, max=num_buckets - 1)
    return buckets + torch.where(is_small, relative, large)


class Attention(nn.Module):
    """Self- or cross-attention: queries from ``x``, keys and values from ``source``."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        hd = cfg.head_dim
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_head * hd, bias=False)
        self.k_proj = nn.Linear(cfg.d_model, cfg.n_kv_head * hd, bias=False)
        self.v_proj = nn.Linear(cfg.d_model, cfg.n_kv_head * hd, bias=False)
        self.o_proj = nn.Linear(cfg.n_head * hd, cfg.d_model, bias=False)

    def forward(self, x, source, bias):
        """``bias`` (B or 1, H, T, S): position biases plus -inf where a key may not be seen
        (None: every key, no bias)."""
        B, T, _ = x.shape
        S, hd, groups = source.shape[1], self.cfg.head_dim, self.cfg.n_head // self.cfg.n_kv_head
        q = self.q_proj(x).view(B, T, self.cfg.n_head, hd).transpose(1, 2)
        k = self.k_proj(source).view(B, S, self.cfg.n_kv_head, hd).transpose(1, 2)
        v = self.v_proj(source).view(B, S, self.cfg.n_kv_head, hd).transpose(1, 2)
        if groups > 1:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=None if bias is None else bias.to(q.dtype),
                                           scale=1.0)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class Block(nn.Module):
    """An encoder block (self-attention, MLP) or, with ``cross``, a decoder block that also
    attends to the encoder's output between the two."""

    def __init__(self, cfg: Config, cross: bool):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        if cross:
            self.cross_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
            self.cross = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, self_bias, memory=None, cross_bias=None):
        h = self.attn_norm(x)
        x = x + self.attn(h, h, self_bias)
        if memory is not None:
            x = x + self.cross(self.cross_norm(x), memory, cross_bias)
        return x + self.mlp(self.mlp_norm(x))


class EncoderDecoder(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg.validate()
        if cfg.arch != "encoder_decoder":
            raise ValueError(f"EncoderDecoder needs arch=encoder_decoder, got {cfg.arch!r}")
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.enc_bias = nn.Embedding(NUM_BUCKETS, cfg.n_head)
        self.dec_bias = nn.Embedding(NUM_BUCKETS, cfg.n_head)
        # One list, encoder blocks then decoder blocks, so the training loop's per-block tools
        # (FSDP sharding, activation checkpointing, compile) find every block as ``blocks``.
        self.blocks = nn.ModuleList([Block(cfg, cross=False) for _ in range(cfg.n_layer)]
                                    + [Block(cfg, cross=True) for _ in range(cfg.n_layer)])
        self.enc_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.dec_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.embed.weight
        self._init_weights()

    def _init_weights(self):
        cfg = self.cfg
        for name, p in self.named_parameters():
            if name == "embed.weight":  # T5: unit variance, the output's d_model^-0.5 scales the logits
                nn.init.normal_(p, std=1.0)
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, std=cfg.init_std / math.sqrt(2 * cfg.n_layer))
            elif name.endswith("q_proj.weight"):  # the 1/sqrt(head_dim) the scores leave out
                nn.init.normal_(p, std=cfg.init_std / math.sqrt(cfg.head_dim))
            elif p.dim() == 2:
                nn.init.normal_(p, std=cfg.init_std)

    @property
    def encoder_blocks(self):
        return self.blocks[:self.cfg.n_layer]

    @property
    def decoder_blocks(self):
        return self.blocks[self.cfg.n_layer:]

    # -- sizes ------------------------------------------------------------------------------

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())  # the tied head counted once
        return n - self.embed.weight.numel() if non_embedding else n

    def flops_per_token(self, source_len: int | None = None, target_len: int | None = None) -> int:
        """Training FLOPs per token (forward + backward) of a (source, target) pair, per token
        of the pair: each token crosses one stack (6 x that stack's matmul parameters, the
        head for target tokens), plus 12 x layers x d x length for every attention it runs."""
        S = source_len or self.cfg.max_seq_len
        U = target_len or self.cfg.max_seq_len
        enc = sum(p.numel() for p in self.encoder_blocks.parameters() if p.dim() == 2)
        dec = sum(p.numel() for p in self.decoder_blocks.parameters() if p.dim() == 2)
        attn = 12 * self.cfg.n_layer * self.cfg.n_head * self.cfg.head_dim
        total = S * (6 * enc + attn * S) + U * (6 * (dec + self.lm_head.weight.numel()) + attn * (U + S))
        return total // (S + U)

    # -- forward ----------------------------------------------------------------------------

    def _position_bias(self, table: nn.Embedding, T: int, S: int, bidirectional: bool, device) -> torch.Tensor:
        rel = torch.arange(S, device=device)[None, :] - torch.arange(T, device=device)[:, None]
        return table(relative_buckets(rel, bidirectional)).permute(2, 0, 1)[None].float()  # (1, H, T, S)

    def _check(self, idx: torch.Tensor, what: str) -> None:
        if idx.shape[1] > self.cfg.max_seq_len:
            raise ValueError(f"{what} length {idx.shape[1]} exceeds max_seq_len {self.cfg.max_seq_len}")

    def encode(self, enc_idx: torch.Tensor, enc_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder's output (B, S, d_model); ``enc_mask`` (B, S) False on padding."""
        kernels.set_backend(self.cfg.kernels)
        self._check(enc_idx, "encoder input")
        S = enc_idx.shape[1]
        bias = self._position_bias(self.enc_bias, S, S, True, enc_idx.device)
        if enc_mask is not None:
            bias = bias + _key_padding(enc_mask)
        x = self.embed(enc_idx)
        for block in self.encoder_blocks:
            x = block(x, bias)
        return self.enc_norm(x)

    def decode(self, dec_idx: torch.Tensor, memory: torch.Tensor, enc_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder's final hidden states (B, U, d_model), scaled for the tied output head."""
        self._check(dec_idx, "decoder input")
        U = dec_idx.shape[1]
        causal = torch.full((U, U), float("-inf"), device=dec_idx.device).triu(1)
        self_bias = self._position_bias(self.dec_bias, U, U, False, dec_idx.device) + causal
        cross_bias = _key_padding(enc_mask)
        x = self.embed(dec_idx)
        for block in self.decoder_blocks:
            x = block(x, self_bias, memory, cross_bias)
        return self.dec_norm(x) * self.cfg.d_model ** -0.5

    def forward(self, enc_idx, dec_idx, targets=None, enc_mask=None):
        """-> (logits (B, U, V), None) without targets; (None, mean loss) with them
        (``targets`` (B, U), -100 where nothing is scored)."""
        h = self.decode(dec_idx, self.encode(enc_idx, enc_mask), enc_mask)
        if targets is None:
            return self.lm_head(h), None
        loss = kernels.linear_cross_entropy(h.reshape(-1, h.shape[-1]), self.lm_head.weight,
                                            targets.reshape(-1), ignore_index=-100)
        return None, loss

    @torch.no_grad()
    def generate(self, enc_idx, max_new_tokens: int, start_id: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None,
                 eos_id: int | None = None, enc_mask=None) -> torch.Tensor:
        """Decoder tokens (B, 1 + new) from ``start_id``, sampled (temperature 0 = greedy); the
        encoder runs once, the decoder re-reads its own output each step (no cache)."""
        memory = self.encode(enc_idx, enc_mask)
        out = torch.full((enc_idx.shape[0], 1), start_id, dtype=torch.long, device=enc_idx.device)
        for _ in range(min(max_new_tokens, self.cfg.max_seq_len - 1)):
            logits = self.lm_head(self.decode(out, memory, enc_mask)[:, -1]).float()
            nxt = sample_next(logits, temperature, top_k, generator)
            out = torch.cat((out, nxt), dim=1)
            if eos_id is not None and bool((nxt == eos_id).all()):
                break
        return out


def _key_padding(enc_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, 1, 1, S) additive mask: -inf on padded encoder positions (None without a mask)."""
    if enc_mask is None:
        return None
    return torch.zeros(enc_mask.shape, device=enc_mask.device).masked_fill(~enc_mask.bool(), float("-inf"))[:, None, None]
