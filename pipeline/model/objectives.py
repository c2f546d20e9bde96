"""Training objectives beside next-token prediction: T5/UL2-style span corruption.

Span corruption (Raffel et al. 2020, T5; Tay et al. 2022, UL2) hides random spans of a text
behind sentinel tokens and trains the model to write the hidden spans back:

    text       The  quick brown fox  jumps over the  lazy dog
    input      The  <s0>        fox  jumps <s1>      lazy dog          (bidirectional prefix)
    target     <s0> quick brown <s1> over the                          (causal, the loss)

A decoder-only model learns it as one sequence ``input + target``: with ``attention=prefix``
the input is the bidirectional prefix (UL2's prefix-LM denoiser, ``prefix_len`` = its length),
with ``attention=causal`` the same sequence is plain causal denoising. Only target tokens count
in the loss. Span positions follow T5's ``random_spans_noise_mask``: noise and non-noise runs
are random segmentations, alternating, always starting with non-noise.

    n = raw_length(seq_len=256)                          # raw tokens per window
    idx, targets, prefix_len = span_corruption_batch(windows[:, :n], sentinel_ids, generator=g)
    _, loss = model(idx, targets, prefix_len=prefix_len)   # idx, targets: (B, 256)
"""
from __future__ import annotations

import torch


def span_counts(length: int, noise_density: float, mean_span_length: float) -> tuple[int, int]:
    """(noise tokens, noise spans) for a window of ``length`` tokens, as T5 rounds them."""
    if length < 2:
        raise ValueError(f"span corruption needs at least 2 tokens, got {length}")
    num_noise = min(max(round(length * noise_density), 1), length - 1)
    num_spans = max(round(num_noise / mean_span_length), 1)
    return num_noise, min(num_spans, num_noise, length - num_noise)


def _segment(num_items: int, num_segments: int, generator) -> torch.Tensor:
    """Lengths of a uniformly random split of ``num_items`` into ``num_segments`` non-empty runs."""
    cuts = torch.randperm(num_items - 1, generator=generator)[: num_segments - 1] + 1
    bounds = torch.cat([torch.tensor([0]), cuts.sort().values, torch.tensor([num_items])])
    return bounds.diff()


def noise_mask(length: int, noise_density: float = 0.15, mean_span_length: float = 3.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Boolean (length,) mask, True on the tokens to hide; never starts with noise."""
    num_noise, num_spans = span_counts(length, noise_density, mean_span_length)
    noise = _segment(num_noise, num_spans, generator)
    keep = _segment(length - num_noise, num_spans, generator)
    runs = torch.stack([keep, noise], dim=1).reshape(-1)  # keep, noise, keep, noise, ...
    is_noise = torch.arange(2 * num_spans) % 2 == 1
    return torch.repeat_interleave(is_noise, runs)


def raw_length(seq_len: int, noise_density: float = 0.15, mean_span_length: float = 3.0) -> int:
    """Raw tokens per window so that the corrupted sequence gives exactly ``seq_len`` inputs.

    Input + target = n + 2 x spans tokens (each span adds a sentinel on both sides); the model
    reads all but the last, so we want n + 2 x spans(n) - 1 == seq_len (T5's random_spans_helper).
    """
    for n in range(seq_len + 1, 1, -1):
        if n + 2 * span_counts(n, noise_density, mean_span_length)[1] - 1 <= seq_len:
            return n
    raise ValueError(f"seq_len {seq_len} is too short for span corruption")


def span_corruption(tokens: torch.Tensor, sentinel_ids: list[int], noise_density: float = 0.15,
                    mean_span_length: float = 3.0, generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One window (n,) -> (idx (L,), targets (L,), prefix_len), L = n + 2 x spans - 1.

    ``targets`` is ``-100`` wherever the next token belongs to the corrupted input, so the loss
    covers the target stream only; ``prefix_len`` is the corrupted input's length.
    """
    tokens = torch.as_tensor(tokens).long().reshape(-1)
    mask = noise_mask(len(tokens), noise_density, mean_span_length, generator)
    starts = mask & ~torch.cat([torch.tensor([False]), mask[:-1]])  # first token of each span
    n_spans = int(starts.sum())
    if n_spans > len(sentinel_ids):
        raise ValueError(f"span corruption needs {n_spans} sentinels for a {len(tokens)}-token window but the "
                         f"tokenizer has {len(sentinel_ids)}: raise tokenize.n_sentinels or shorten the window")
    sentinels = torch.as_tensor(list(sentinel_ids[:n_spans]), dtype=torch.long)
    span_of = torch.cumsum(starts.long(), 0) - 1  # span index of every noise token
    # Input: non-noise tokens, and each span's first token replaced by its sentinel.
    inp = torch.where(starts, sentinels[span_of.clamp(min=0)], tokens)[~mask | starts]
    # Target: each span's sentinel followed by the span's tokens.
    tgt = _interleave(tokens[mask], span_of[mask], sentinels)
    seq = torch.cat([inp, tgt])
    prefix_len = len(inp)
    idx, targets = seq[:-1].clone(), seq[1:].clone()
    targets[: prefix_len - 1] = -100  # predicting the corrupted input is not the task
    return idx, targets, prefix_len


def _interleave(span_tokens: torch.Tensor, span_index: torch.Tensor, sentinels: torch.Tensor) -> torch.Tensor:
    """<s0> span0 <s1> span1 ...: a sentinel before the first token of every span."""
    first = torch.ones_like(span_index, dtype=torch.bool)
    first[1:] = span_index[1:] != span_index[:-1]
    out = torch.empty(len(span_tokens) + int(first.sum()), dtype=torch.long)
    pos = torch.arange(len(span_tokens)) + torch.cumsum(first.long(), 0)  # each token shifts by the sentinels so far
    out[pos] = span_tokens
    out[pos[first] - 1] = sentinels[span_index[first]]
    return out


def span_corruption_batch(windows: torch.Tensor, sentinel_ids: list[int], noise_density: float = 0.15,
                          mean_span_length: float = 3.0, generator: torch.Generator | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(B, n) windows -> idx (B, L), targets (B, L), prefix_len (an int: the same n gives every
    row the same number of noise tokens and spans, so the same prefix length)."""
    rows = [span_corruption(w, sentinel_ids, noise_density, mean_span_length, generator) for w in windows]
    return torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows]), rows[0][2]
