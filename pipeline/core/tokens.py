"""Read a tokenize stage directory: memory-mapped token streams for training and evaluation.

    data = TokenData("results/tokenize/<key>")
    x, y = data.get_batch("train", batch_size=16, seq_len=256, generator=torch.Generator().manual_seed(0))
    for x, y in data.eval_batches("val", batch_size=16, seq_len=256): ...
    bpb = total_nats / math.log(2) / data.meta["val_text_bytes"]

Token files are flat ``uint16``/``uint32`` arrays (``meta["dtype"]``); documents are laid out as
``[bos] text [eos]`` back to back, and ``<split>.idx.npy`` holds each document's start offset
plus the total, so document i is ``tokens[idx[i]:idx[i+1]]``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np
import torch


class TokenData:
    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        meta_path = self.dir / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path} not found: is {self.dir} a tokenize stage directory?")
        self.meta = json.loads(meta_path.read_text())
        self.dtype = np.dtype(self.meta["dtype"])
        self.vocab_size = self.meta["vocab_size"]
        self.train = self._tokens("train")
        self.val = self._tokens("val")

    def _tokens(self, split: str) -> np.ndarray:
        path = self.dir / f"{split}.bin"
        if path.stat().st_size == 0:  # np.memmap refuses empty files
            return np.zeros(0, dtype=self.dtype)
        return np.memmap(path, dtype=self.dtype, mode="r")

    def tokens(self, split: str) -> np.ndarray:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        return self.train if split == "train" else self.val

    def offsets(self, split: str) -> np.ndarray:
        return np.load(self.dir / f"{split}.idx.npy")

    def documents(self, split: str) -> Iterator[np.ndarray]:
        data, idx = self.tokens(split), self.offsets(split)
        for a, b in zip(idx[:-1], idx[1:]):
            yield data[a:b]

    def get_batch(self, split: str, batch_size: int, seq_len: int,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch_size`` random windows of ``seq_len + 1`` tokens as (inputs, next-token targets),
        int64, as nanoGPT samples: windows cross document boundaries (eos/bos mark them)."""
        data = self.tokens(split)
        if len(data) <= seq_len:
            raise ValueError(f"{split} has {len(data)} tokens, fewer than seq_len + 1 = {seq_len + 1}")
        starts = torch.randint(len(data) - seq_len, (batch_size,), generator=generator).tolist()
        chunk = np.stack([data[s:s + seq_len + 1] for s in starts]).astype(np.int64)
        t = torch.from_numpy(chunk)
        return t[:, :-1], t[:, 1:]

    def eval_batches(self, split: str, batch_size: int, seq_len: int,
                     max_batches: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Consecutive non-overlapping windows over the split, in order (deterministic): each
        token is predicted at most once; the tail shorter than one window is left out."""
        data = self.tokens(split)
        n_windows = (len(data) - 1) // seq_len
        for b, first in enumerate(range(0, n_windows, batch_size)):
            if max_batches is not None and b >= max_batches:
                return
            rows = range(first, min(first + batch_size, n_windows))
            chunk = np.stack([data[r * seq_len: r * seq_len + seq_len + 1] for r in rows]).astype(np.int64)
            t = torch.from_numpy(chunk)
            yield t[:, :-1], t[:, 1:]
