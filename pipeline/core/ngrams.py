"""Word n-grams (default 13, as GPT-3's decontamination) shared between training text and
an evaluation set.

An eval example is *dirty* when any of its n-grams occurs in the training data (GPT-3, Brown
et al. 2020, appendix C). Words are lower-cased runs of letters/digits; each n-gram becomes one
64-bit hash, so the training side is a sorted numpy array and a lookup is ``np.isin``.
Examples shorter than n words are checked as one gram of all their words when they have at
least ``min_words`` (8, GPT-3's smallest n), and left unchecked below that.

Used by evaluate (the contamination report) and dedup (decontamination: drop training
documents that share an n-gram with an eval set):

    index = NgramIndex.from_texts(task_texts(["hellaswag", "piqa"]), n=13)
    index.overlaps(document_text)
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
