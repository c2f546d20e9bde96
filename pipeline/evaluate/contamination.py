"""Train/test overlap: word n-grams (default 13, as GPT-3's decontamination) shared between
the training text and each evaluation set.

An eval example is *dirty* when any of its n-grams occurs in the training data (GPT-3, Brown
et al. 2020, appendix C). Words are lower-cased runs of letters/digits; each n-gram becomes one
64-bit hash, so the training side is a sorted numpy array and a lookup is ``np.isin``.
Examples shorter than n words are checked as one gram of all their words when they have at
least ``min_words`` (8, GPT-3's smallest n), and left unchecked below that.

The dedup stage can drop training documents that overlap the eval sets (the hook):

    index = NgramIndex.from_texts(eval_texts(["hellaswag", "piqa"], limit=0), n=13)
    def shard_fn(rows):
        kept, dropped = [], []
        for r in rows:
            (dropped.append((r, "eval_overlap")) if index.overlaps(r["text"]) else kept.append(r))
        return kept, dropped, {}
"""
from __future__ import annotations

import re
import zlib
from typing import Iterable

import numpy as np

WORD = re.compile(r"\w+")
_P = np.uint64(1099511628211)  # FNV prime: a 64-bit polynomial hash of the word ids


def word_ids(text: str) -> np.ndarray:
    return np.array([zlib.crc32(w.encode()) for w in WORD.findall(text.lower())], dtype=np.uint64)


def ngram_hashes(text: str, n: int = 13, min_words: int = 8) -> np.ndarray:
    ids = word_ids(text)
    if len(ids) < n:
        n = len(ids)
        if n < min_words:
            return np.zeros(0, dtype=np.uint64)
    h = np.zeros(len(ids) - n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):  # wrapping multiplication is the hash
        for k in range(n):
            h = h * _P + ids[k:len(ids) - n + 1 + k]
    return h


class NgramIndex:
    """The set of n-gram hashes of a corpus; ``overlap`` counts a text's grams found in it."""

    def __init__(self, hashes: np.ndarray, n: int = 13, min_words: int = 8):
        # sort + drop repeats, and look up with searchsorted: far faster than np.unique/np.isin
        # (hash-based in numpy 2) on millions of grams.
        h = np.sort(np.asarray(hashes, dtype=np.uint64))
        self.hashes = h[np.r_[True, h[1:] != h[:-1]]] if len(h) else h
        self.n, self.min_words = n, min_words

    @classmethod
    def from_texts(cls, texts: Iterable[str], n: int = 13, min_words: int = 8) -> "NgramIndex":
        parts = [ngram_hashes(t, n, min_words) for t in texts]
        return cls(np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64), n, min_words)

    def __len__(self) -> int:
        return len(self.hashes)

    def overlap(self, text: str) -> tuple[int, int]:
        """(n-grams in text, of which in the index)."""
        grams = ngram_hashes(text, self.n, self.min_words)
        if not len(grams) or not len(self.hashes):
            return len(grams), 0
        pos = np.minimum(np.searchsorted(self.hashes, grams), len(self.hashes) - 1)
        return len(grams), int((self.hashes[pos] == grams).sum())

    def overlaps(self, text: str) -> bool:
        return self.overlap(text)[1] > 0


def report(index: NgramIndex, texts: list[str]) -> dict:
    """Per eval set: examples checked, dirty examples (any shared n-gram), share of grams shared."""
    checked = dirty = grams = hits = 0
    for t in texts:
        g, h = index.overlap(t)
        if g:
            checked += 1
            dirty += h > 0
            grams += g
            hits += h
    return {"examples": len(texts), "checked": checked, "dirty": dirty,
            "dirty_fraction": dirty / checked if checked else 0.0,
            "ngram_overlap": hits / grams if grams else 0.0, "n": index.n}


def eval_texts(task_names: list[str], limit: int = 0) -> list[str]:
    """The texts of the named tasks that the dedup hook should keep out of training."""
    from pipeline.evaluate.tasks import load_task

    out = []
    for name in task_names:
        task = load_task(name, limit=limit)
        out += [task.decontamination_text(d) for d in task.docs]
    return out
