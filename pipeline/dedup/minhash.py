"""MinHash signatures and LSH banding, vectorized over a whole shard.

Permutation k maps the top 32 bits x of a shingle hash to (a_k * x + b_k) mod 2**32 (a_k odd:
a bijection); a signature value is a document's minimum under it. The shingle hashes are
already splitmix64-mixed, so this cheap family behaves as min-wise independent in practice
(the tests check that signature agreement estimates exact Jaccard without bias). 32-bit lanes
run 2.5x faster than 64-bit ones (measured: 0.05 s vs 0.13 s for a 2 MB shard, 128 perms).

Band b of a signature (``rows`` values) becomes one 64-bit bucket key; two documents are LSH
candidates when any band key matches. ``lsh_params`` derives bands x rows from the threshold.
"""
from __future__ import annotations

import numpy as np

from pipeline.dedup.shingles import ShardShingles, splitmix64

SIG_EMPTY = np.uint32(0xFFFFFFFF)  # signature of a document without shingles (never bucketed)
_CHUNK_ELEMENTS = 1 << 21


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2**31, size=num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = rng.integers(0, 2**32, size=num_perm, dtype=np.uint32)
    return a, b


def signatures(sh: ShardShingles, num_perm: int, seed: int) -> np.ndarray:
    """(docs, num_perm) uint32 MinHash signatures."""
    a, b = permutations(num_perm, seed)
    counts = sh.counts()
    docs = len(counts)
    sig = np.full((docs, num_perm), SIG_EMPTY, dtype=np.uint32)
    has = np.flatnonzero(counts > 0)
    if not len(has):
        return sig
    starts = sh.starts[has]
    x = (sh.values >> np.uint64(32)).astype(np.uint32)
    # A few permutations at a time: the (perms, shingles) block stays in cache (~8 MB).
    step = max(1, _CHUNK_ELEMENTS // max(len(x), 1))
    with np.errstate(over="ignore"):
        for lo in range(0, num_perm, step):
            hi = min(num_perm, lo + step)
            v = np.multiply.outer(a[lo:hi], x)
            v += b[lo:hi, None]
            sig[has, lo:hi] = np.minimum.reduceat(v, starts, axis=1).T
    return sig


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(docs, bands) uint64 bucket keys: each band's rows folded into one mixed 64-bit value."""
    weights = np.random.default_rng(0xBA4D).integers(0, 2**63, size=rows, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    keys = np.zeros((sig.shape[0], bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(bands):
            block = sig[:, j * rows:(j + 1) * rows].astype(np.uint64)
            keys[:, j] = splitmix64((block * weights).sum(axis=1, dtype=np.uint64) + np.uint64(j))
    return keys


def candidate_probability(similarity, bands: int, rows: int):
    """Probability that two documents with this Jaccard share at least one band."""
    return 1.0 - (1.0 - np.asarray(similarity, dtype=float) ** rows) ** bands


def _balanced(threshold: float, num_perm: int) -> tuple[int, int]:
    """datasketch's rule (MinHashLSH._optimal_param, equal weights): the split of num_perm that
    minimizes false-positive area below the threshold plus false-negative area above it."""
    grid_lo, grid_hi = np.linspace(0, threshold, 200), np.linspace(threshold, 1, 200)

    def area(y, x):  # trapezoid rule
        return float(((y[1:] + y[:-1]) * np.diff(x)).sum() / 2)

    best, best_err = (1, 1), np.inf
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = area(candidate_probability(grid_lo, b, r), grid_lo)
            fn = area(1 - candidate_probability(grid_hi, b, r), grid_hi)
            if 0.5 * fp + 0.5 * fn < best_err:
                best, best_err = (b, r), 0.5 * fp + 0.5 * fn
    return best


def lsh_params(threshold: float, num_perm: int, verify: str, candidate_recall: float) -> tuple[int, int]:
    """Bands x rows for a Jaccard threshold.

    With verification (exact or estimated), LSH only proposes candidates, so a missed pair is
    lost for good while a false candidate costs one check: take the most selective split
    (most rows) whose probability of proposing a pair at exactly the threshold is at least
    ``candidate_recall``. Without verification every candidate is a duplicate, so balance
    false positives against false negatives as datasketch does.
    """
    if verify == "none":
        return _balanced(threshold, num_perm)
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if candidate_probability(threshold, bands, rows) >= candidate_recall:
            return bands, rows
    return num_perm, 1
