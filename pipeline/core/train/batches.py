"""Which token windows each optimizer step reads: a pure function of (seed, step, rank).

The training stream is cut into non-overlapping windows of ``seq_len + 1`` tokens (inputs
and their next-token targets, sharing one token with the next window, as nanoGPT's
get_batch). Each epoch visits every window once in an order shuffled by (seed, epoch).
Step ``s`` reads global samples ``[s*G, (s+1)*G)`` (G = global batch); micro-step ``a`` of
rank ``r`` reads its slice of them. So the data position is just the step: a resumed run
reads exactly what the uninterrupted run would have, and N processes read together what
one process reads with N times the gradient accumulation.
"""
from __future__ import annotations

import numpy as np
import torch


class ShuffledOrder:
    """Global sample i -> item index: epochs of a permutation of ``n`` items, shuffled by (seed, epoch)."""

    def __init__(self, n: int, seed: int):
        if n < 1:
            raise ValueError("nothing to sample from")
        self.n, self.seed = n, seed
        self._epoch, self._order = -1, None

    def _order_of(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._epoch = epoch
            self._order = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return self._order

    def indices(self, first: int, count: int) -> np.ndarray:
        """Item indices of global samples first .. first+count-1."""
        idx = np.arange(first, first + count)
        out = np.empty(count, dtype=np.int64)
        for epoch in np.unique(idx // self.n):
            sel = idx // self.n == epoch
            out[sel] = self._order_of(int(epoch))[idx[sel] % self.n]
        return out


class WindowSampler:
    def __init__(self, tokens: np.ndarray, seq_len: int, seed: int):
        self.tokens, self.seq_len, self.seed = tokens, seq_len, seed
        self.n_windows = (len(tokens) - 1) // seq_len
        if self.n_windows < 1:
            raise ValueError(f"{len(tokens)} tokens are too few for one window of {seq_len}+1")
        self.order = ShuffledOrder(self.n_windows, seed)

    def window_starts(self, first: int, count: int) -> np.ndarray:
        """Token offsets of global samples first .. first+count-1."""
        return self.order.indices(first, count) * self.seq_len

    def batch(self, first: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        return windows(self.tokens, self.window_starts(first, count), self.seq_len)


def windows(tokens: np.ndarray, starts, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) int64 tensors (len(starts), seq_len) from a token array or memmap."""
    rows = np.stack([np.asarray(tokens[s: s + seq_len + 1], dtype=np.int64) for s in starts])
    t = torch.from_numpy(rows)
    return t[:, :-1].contiguous(), t[:, 1:].contiguous()


def micro_batch_start(step: int, micro: int, rank: int, cfg) -> int:
    """First global sample index of (step, micro-step, rank); the ranks of one tensor- or
    pipeline-parallel group hold one model replica and read the same samples."""
    return step * cfg.global_batch() + (micro * cfg.dp + cfg.data_rank(rank)) * cfg.batch_size


def eval_starts(n_tokens: int, seq_len: int, count: int | None) -> np.ndarray:
    """Validation windows: all of them, or ``count`` spread evenly (the same ones every time)."""
    n = (n_tokens - 1) // seq_len
    if n < 1:
        raise ValueError(f"{n_tokens} validation tokens are too few for one window of {seq_len}+1")
    picks = np.arange(n) if count is None or count >= n else np.linspace(0, n - 1, count).round().astype(np.int64)
    return picks * seq_len
