"""Training objectives beside next-token prediction: T5/UL2 span corruption and prefix LM.

Every objective turns a window of tokens into a (source, target) pair: the source is what the
model reads, the target what it learns to write. The pair is then laid out for the model:

    decoder          one sequence source + target, the source as the prefix (``prefix_len``:
                     attended bidirectionally by attention=prefix), loss on the target only
    encoder-decoder  the source into the encoder, the target into the decoder (shifted right
                     behind the start token), loss on every target token

    lm               source = the first token, target = the rest (ordinary next-token loss)
    prefix_lm        source = a prefix of uniformly random length, target = the rest
    span_corruption  source = the window with spans replaced by sentinels, target = the spans

Span corruption (Raffel et al. 2020, T5; Tay et al. 2022, UL2) hides random spans of a text
behind sentinel tokens and trains the model to write the hidden spans back:

    text       The  quick brown fox  jumps over the  lazy dog
    input      The  <s0>        fox  jumps <s1>      lazy dog          (bidirectional prefix)
    target     <s0> quick brown <s1> over the                          (causal, the loss)

A decoder-only model learns it as one sequence ``input + target``: with ``attention=prefix``
the input is the bidirectional prefix (UL2's prefix-LM denoiser, ``prefix_len`` = its length),
with ``attention=causal`` the same sequence is plain causal denoising; an encoder-decoder reads
the input in its encoder. Only target tokens count in the loss. Span positions follow T5's ``random_spans_noise_mask``: noise and non-noise runs
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


def corrupt_spans(tokens: torch.Tensor, sentinel_ids: list[int], noise_density: float = 0.15,
                  mean_span_length: float = 3.0, generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """One window (n,) -> (source, target): the window with each hidden span replaced by its
    sentinel, and each sentinel followed by the span it hides (n + 2 x spans tokens in all)."""
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
    return inp, _interleave(tokens[mask], span_of[mask], sentinels)


def span_corruption(tokens: torch.Tensor, sentinel_ids: list[int], noise_density: float = 0.15,
                    mean_span_length: float = 3.0, generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One window (n,) -> (idx (L,), targets (L,), prefix_len), L = n + 2 x spans - 1: the
    decoder layout of ``corrupt_spans``."""
    source, target = corrupt_spans(tokens, sentinel_ids, noise_density, mean_span_length, generator)
    idx, targets = decoder_layout(source, target)
    return idx, targets, len(source)


def split_prefix(tokens: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One window (n,) -> (prefix, rest), the prefix 1 .. n-1 tokens long, uniformly (T5's and
    UL2's prefix LM)."""
    tokens = torch.as_tensor(tokens).long().reshape(-1)
    if len(tokens) < 2:
        raise ValueError(f"a prefix LM needs at least 2 tokens, got {len(tokens)}")
    p = int(torch.randint(1, len(tokens), (1,), generator=generator))
    return tokens[:p], tokens[p:]


def decoder_layout(source: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(idx, targets) of the sequence source + target: the model reads all but its last token
    and is scored on the target only (``-100`` where the next token belongs to the source)."""
    seq = torch.cat([source, target])
    idx, targets = seq[:-1].clone(), seq[1:].clone()
    targets[: len(source) - 1] = -100  # predicting the visible source is not the task
    return idx, targets


def decoder_batch(pairs: list[tuple[torch.Tensor, torch.Tensor]], seq_len: int, pad_id: int) -> dict:
    """(source, target) pairs -> {"idx", "targets"} (B, seq_len), padded on the right (pad id,
    target -100), and "prefix_len" (B,): each row's source length."""
    idx = torch.full((len(pairs), seq_len), pad_id, dtype=torch.long)
    targets = torch.full((len(pairs), seq_len), -100, dtype=torch.long)
    for row, (source, target) in enumerate(pairs):
        x, y = decoder_layout(source, target)
        if len(x) > seq_len:
            raise ValueError(f"a {len(x)}-token sequence does not fit seq_len {seq_len}")
        idx[row, :len(x)], targets[row, :len(y)] = x, y
    prefix_len = torch.tensor([len(source) for source, _ in pairs], dtype=torch.long)
    return {"idx": idx, "targets": targets, "prefix_len": prefix_len}


def seq2seq_batch(pairs: list[tuple[torch.Tensor, torch.Tensor]], pad_id: int) -> dict:
    """(source, target) pairs -> {"enc", "enc_mask"} (B, S) and {"dec", "targets"} (B, U):
    the decoder reads the target shifted right behind ``pad_id`` (T5's decoder start token),
    each padded to the longest row (encoder padding masked, target padding -100)."""
    S, U = max(len(s) for s, _ in pairs), max(len(t) for _, t in pairs)
    enc = torch.full((len(pairs), S), pad_id, dtype=torch.long)
    dec = torch.full((len(pairs), U), pad_id, dtype=torch.long)
    targets = torch.full((len(pairs), U), -100, dtype=torch.long)
    enc_mask = torch.zeros((len(pairs), S), dtype=torch.bool)
    for row, (source, target) in enumerate(pairs):
        enc[row, :len(source)], enc_mask[row, :len(source)] = source, True
        dec[row, 1:len(target)] = target[:-1]
        targets[row, :len(target)] = target
    return {"enc": enc, "enc_mask": enc_mask, "dec": dec, "targets": targets}


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
