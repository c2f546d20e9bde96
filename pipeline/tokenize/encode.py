"""Encode document shards into flat token files, in parallel worker processes.

Each document becomes ``[bos] text-tokens [eos]`` and goes to ``train`` or ``val`` by a hash of
its id, so the split is the same on every run and on every machine, whatever the shard
layout or worker count. Shards are cut into row ranges of about equal bytes; workers write
one part per (range, split) and the parent concatenates the parts in corpus order, so the
output is byte-identical for any number of workers.
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from tqdm import tqdm

SPLITS = ("train", "val")


def id_fraction(doc_id: str) -> float:
    """A document's place in [0, 1), from its id alone: the split is stable across runs."""
    return int.from_bytes(hashlib.sha256(doc_id.encode("utf-8")).digest()[:8], "big") / 2**64


def val_ids(ids: list[str], fraction: float, min_docs: int) -> set[str]:
    """Ids whose hash falls below ``fraction``; at least the ``min_docs`` lowest hashes, so a
    tiny corpus still has a validation set (chosen by hash too: still deterministic), and never
    every document."""
    ranked = sorted(ids, key=id_fraction)
    chosen = {i for i in ranked if id_fraction(i) < fraction}
    if len(chosen) < min_docs:
        chosen.update(ranked[:min_docs])
    if ids and len(chosen) >= len(ids):  # training needs at least one document
        chosen.discard(ranked[-1])
    return chosen


def dtype_for(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


@dataclass
class ShardJob:
    shard: Path
    rows: tuple[int, int]  # [start, end) rows of the shard: big shards are cut into pieces
    parts: Path  # directory for the parts
    tokenizer_json: str
    val: frozenset
    eos_id: int
    dtype: str

    @property
    def name(self) -> str:
        return f"{self.shard.stem}-{self.rows[0]:08d}"


def _init_worker() -> None:
    # Parallelism comes from processes: keep each one's tokenizer single-threaded.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def plan_jobs(shards: list[Path], workers: int, max_job_bytes: int = 16_000_000) -> list[tuple[Path, tuple[int, int]]]:
    """Row ranges of about equal text bytes, several per worker, in corpus order: a few large
    documents (books) in one shard would otherwise keep one worker busy while the rest idle."""
    sizes = [pq.read_table(s, columns=["text"]).column("text").to_pylist() for s in shards]
    sizes = [[len(t.encode("utf-8")) if t else 0 for t in texts] for texts in sizes]
    total = sum(map(sum, sizes))
    target = max(1, min(max_job_bytes, total // max(4 * workers, 1)))
    jobs = []
    for shard, row_sizes in zip(shards, sizes):
        start, acc = 0, 0
        for i, n in enumerate(row_sizes):
            acc += n
            if acc >= target and i + 1 < len(row_sizes):
                jobs.append((shard, (start, i + 1)))
                start, acc = i + 1, 0
        jobs.append((shard, (start, len(row_sizes))))
    return jobs


def encode_shard(job: ShardJob) -> dict:
    """Encode rows of one shard; write ``<part>.<split>.bin`` and ``.len.npy``; return counts."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(job.tokenizer_json)
    table = pq.read_table(job.shard, columns=["id", "text"]).slice(job.rows[0], job.rows[1] - job.rows[0])
    ids, texts = table.column("id").to_pylist(), table.column("text").to_pylist()
    stats = {"docs_in": len(ids), "empty": 0}
    by_split: dict[str, list[int]] = {s: [] for s in SPLITS}
    for n, (doc_id, text) in enumerate(zip(ids, texts)):
        if not text:
            stats["empty"] += 1
            continue
        by_split["val" if doc_id in job.val else "train"].append(n)
    for split, rows in by_split.items():
        encodings = tok.encode_batch([texts[r] for r in rows]) if rows else []
        # bos comes from the tokenizer's post-processor; eos closes every document.
        seqs = [np.asarray(e.ids + [job.eos_id], dtype=job.dtype) for e in encodings]
        tokens = np.concatenate(seqs) if seqs else np.zeros(0, dtype=job.dtype)
        tokens.tofile(job.parts / f"{job.name}.{split}.bin")
        np.save(job.parts / f"{job.name}.{split}.len.npy", np.array([len(s) for s in seqs], dtype=np.int64))
        stats[f"{split}_docs"] = len(rows)
        stats[f"{split}_tokens"] = int(tokens.size)
        stats[f"{split}_bytes"] = sum(len(texts[r].encode("utf-8")) for r in rows)
    stats["bytes_in"] = sum(len(t.encode("utf-8")) for t in texts if t)
    return stats


def encode_shards(shards: list[Path], parts: Path, tokenizer_json: str, val: set[str], eos_id: int,
                  dtype: np.dtype, workers: int) -> tuple[list[str], list[dict]]:
    """Encode every shard; -> (part names in corpus order, per-part counts)."""
    parts.mkdir(parents=True, exist_ok=True)
    frozen = frozenset(val)
    jobs = [ShardJob(s, rows, parts, tokenizer_json, frozen, eos_id, dtype.str) for s, rows in plan_jobs(shards, workers)]
    bar = tqdm(total=len(jobs), desc="tokenize: encode", unit="part", disable=None)
    results = []
    if workers <= 1 or len(jobs) == 1:
        for job in jobs:
            results.append(encode_shard(job))
            bar.update()
    else:
        # spawn, not fork: the parent has run the tokenizer's thread pool (training), and a
        # forked copy of a live thread pool can deadlock.
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker) as pool:
            for r in pool.map(encode_shard, jobs):
                results.append(r)
                bar.update()
    bar.close()
    return [j.name for j in jobs], results


def concatenate(names: list[str], parts: Path, out: Path, split: str, dtype: np.dtype) -> tuple[int, int]:
    """Join the parts of ``split`` in corpus order into ``<split>.bin`` and its offset index
    ``<split>.idx.npy`` (n_docs + 1 start offsets; document i is tokens[idx[i]:idx[i+1]])."""
    lengths = [np.load(parts / f"{n}.{split}.len.npy") for n in names]
    all_lengths = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)
    offsets = np.zeros(len(all_lengths) + 1, dtype=np.int64)
    np.cumsum(all_lengths, out=offsets[1:])
    with open(out / f"{split}.bin", "wb") as f:
        for n in names:
            part = parts / f"{n}.{split}.bin"
            f.write(part.read_bytes())
            part.unlink()
    np.save(out / f"{split}.idx.npy", offsets)
    total = int(offsets[-1])
    size = (out / f"{split}.bin").stat().st_size
    if size != total * dtype.itemsize:  # a part went missing or was cut short
        raise RuntimeError(f"{split}.bin holds {size} bytes, the index says {total} tokens of {dtype}")
    return len(all_lengths), total
