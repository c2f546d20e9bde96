"""Step 1 (scatter, one job per shard): exact keys, MinHash signatures and band keys of a shard.

Memory is one shard's worth whatever the corpus size. The output, ``<shard stem>.npz``, holds
per document (in shard order): ``exact`` (16-byte normalized-text key), ``bands`` (band keys),
``shingles`` (count; 0 = nothing to compare), ``length`` (characters, for keep=longest) and,
when verification is by estimated Jaccard, the signature ``sig`` itself.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.dedup.minhash import band_keys, signatures
from pipeline.dedup.shingles import shard_shingles


def read_texts(shard: Path) -> pa.Array:
    texts = pq.read_table(shard, columns=["text"]).column("text").combine_chunks()
    # A null text is compared as an empty one (collect never writes one; a user's shard might).
    return pc.fill_null(texts, "")


def shard_signatures(texts, ngram: int, num_perm: int, seed: int, bands: int, rows: int,
                     keep_sig: bool) -> dict[str, np.ndarray]:
    texts = texts if isinstance(texts, pa.Array) else pa.array(texts, type=pa.string())
    sh = shard_shingles(texts, ngram)
    sig = signatures(sh, num_perm, seed)
    out = {
        "exact": sh.exact,
        "bands": band_keys(sig, bands, rows),
        "shingles": sh.counts().astype(np.int64),
        "length": pc.utf8_length(texts).to_numpy(zero_copy_only=False).astype(np.int64),
    }
    if keep_sig:
        out["sig"] = sig
    return out


def signature_file(directory: Path, shard: Path) -> Path:
    return Path(directory) / f"{Path(shard).stem}.npz"


def write_shard_signatures(shard: Path, out_file: Path, ngram: int, num_perm: int, seed: int,
                           bands: int, rows: int, keep_sig: bool) -> int:
    """Compute and write one shard's signature file atomically; return its document count."""
    try:
        texts = read_texts(shard)
        arrays = shard_signatures(texts, ngram, num_perm, seed, bands, rows, keep_sig)
    except Exception as err:  # name the shard: the traceback alone would not
        raise RuntimeError(f"dedup signatures: shard {shard} failed: {type(err).__name__}: {err}") from err
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(f".{out_file.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, out_file)
    return len(texts)
