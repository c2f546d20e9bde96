"""Step 2 (gather): exact-duplicate groups and LSH band buckets -> candidate pairs.

Documents are numbered globally in shard order (``offsets``). Exact groups are runs of equal
normalized-text keys; only one member of each (the first) goes on to LSH, since its copies
have the same shingles. For every band, documents are sorted by band key and each one is
paired with up to ``window`` documents before it in its bucket: all pairs in ordinary buckets,
bounded work in a huge one. Pairs are deduplicated across bands.

Writes ``shards.json`` (shard names and sizes), ``nodes.npz`` (every document in an exact
group or a candidate pair: global index, length, exact group), ``pairs.npy`` and
``stats.json``. Memory: the band keys and exact keys of the corpus (bands x 8 + 40 bytes a
document), plus the duplicates found.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _runs(sorted_keys: np.ndarray) -> np.ndarray:
    """Run label of each position of a sorted key array (equal keys share a label)."""
    if not len(sorted_keys):
        return np.zeros(0, dtype=np.int64)
    change = np.ones(len(sorted_keys), dtype=bool)
    if sorted_keys.ndim == 1:
        change[1:] = sorted_keys[1:] != sorted_keys[:-1]
    else:
        change[1:] = np.any(sorted_keys[1:] != sorted_keys[:-1], axis=1)
    return np.cumsum(change) - 1


def exact_groups(exact: np.ndarray) -> np.ndarray:
    """Group label per document for groups of 2+ equal keys, -1 for unique documents."""
    key = np.ascontiguousarray(exact).view(np.uint64).reshape(len(exact), 2)
    order = np.lexsort((key[:, 1], key[:, 0]))  # stable: members stay in document order
    runs = _runs(key[order])
    sizes = np.bincount(runs) if len(runs) else np.zeros(0, dtype=np.int64)
    label = np.full(len(exact), -1, dtype=np.int64)
    multi = sizes[runs] >= 2
    # Number groups by their first member, so labels do not depend on hash order.
    first = order[np.concatenate([[True], runs[1:] != runs[:-1]])] if len(runs) else order
    label[order[multi]] = first[runs[multi]]
    return label


def band_pairs(keys: np.ndarray, docs: np.ndarray, window: int) -> tuple[np.ndarray, int]:
    """Pairs (a < b) of documents sharing a key, each paired with <= window before it; largest bucket."""
    order = np.argsort(keys, kind="stable")
    ks, ds = keys[order], docs[order]
    out, largest, d = [], 1 if len(ks) else 0, 1
    while d <= window and d < len(ks):
        same = ks[d:] == ks[:-d]
        if not same.any():
            break
        largest = d + 1
        out.append(np.stack([ds[:-d][same], ds[d:][same]], axis=1))
        d += 1
    pairs = np.concatenate(out) if out else np.zeros((0, 2), dtype=np.int64)
    return pairs, largest


def find_candidates(sig_files: list[Path], shard_names: list[str], bands: int, window: int,
                    out: Path, log) -> dict:
    parts = [np.load(f) for f in sig_files]
    sizes = [len(p["length"]) for p in parts]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    n = int(offsets[-1])
    cat = (lambda name: np.concatenate([p[name] for p in parts])) if parts else (lambda name: np.zeros(0))
    exact = cat("exact").astype(np.uint8).reshape(n, 16)
    shingles, length = cat("shingles").astype(np.int64), cat("length").astype(np.int64)
    group = exact_groups(exact)
    eligible = (shingles > 0) & ((group < 0) | (group == np.arange(n)))
    idx = np.flatnonzero(eligible)
    found, largest = [], 0
    band_keys = np.concatenate([p["bands"] for p in parts]) if parts else np.zeros((0, bands), dtype=np.uint64)
    for j in range(bands):
        keys = band_keys[idx, j]
        pairs, big = band_pairs(keys, idx, window)
        found.append(pairs)
        largest = max(largest, big)
    pairs = np.concatenate(found) if found else np.zeros((0, 2), dtype=np.int64)
    pairs = np.unique(pairs[:, 0] * max(n, 1) + pairs[:, 1])
    pairs = np.stack([pairs // max(n, 1), pairs % max(n, 1)], axis=1).astype(np.int64)
    nodes = np.unique(np.concatenate([np.flatnonzero(group >= 0), pairs.ravel()]))
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "pairs.npy", pairs)
    np.savez(out / "nodes.npz", doc=nodes, length=length[nodes], exact_group=group[nodes])
    (out / "shards.json").write_text(json.dumps([{"name": s, "docs": k} for s, k in zip(shard_names, sizes)]))
    in_groups = int((group >= 0).sum())
    stats = {
        "docs": n,
        "no_shingles": int((shingles == 0).sum()),
        "exact_groups": int(len(np.unique(group[group >= 0]))),
        "docs_in_exact_groups": in_groups,
        "lsh_docs": int(len(idx)),
        "candidate_pairs": int(len(pairs)),
        "largest_bucket": int(largest),
    }
    log.info("buckets: %s", stats)
    return stats
