"""Encode throughput: the tokenize stage's parallel encoder versus one `tokenizers` process.

    python -m benchmarks.tokenizer                       the built-in corpus (collected once, cached)
    python -m benchmarks.tokenizer --shards DIR --workers 8

Both sides encode the same documents with the same byte-level BPE (trained here on the first
few MB) and end with the same thing on disk: flat token files plus document offsets.

    baseline  one process: Tokenizer.encode_batch over every document (tokenizers' own Rayon
              threads, its default), then the ids to one uint16 file
    ours      pipeline.tokenize.encode: shards cut into byte-balanced row ranges, spread over
              ``--workers`` processes each encoding single-threaded, parts joined in corpus
              order (what the stage runs)
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pipeline.core import docs
from pipeline.tokenize import bpe, encode

CACHE = Path("results/benchmarks/tokenizer-corpus")


def builtin_shards() -> Path:
    """The default collect output of the built-in corpus, built once."""
    if not (CACHE / "stats.json").is_file():
        from pipeline.collect import Config
        from pipeline.stage import execute

        import dataclasses
        execute("collect", dataclasses.asdict(Config()), {}, CACHE, key="benchmark")
    return CACHE


def read_texts(shards: list[Path]) -> list[str]:
    return [t for s in shards for t in pq.read_table(s, columns=["text"]).column("text").to_pylist() if t]


def baseline(tokenizer_json: str, texts: list[str], eos: int, out: Path) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer_json)
    ids = [e.ids + [eos] for e in tok.encode_batch(texts)]
    lengths = np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(ids))
    np.fromiter((t for seq in ids for t in seq), dtype=np.uint16, count=int(lengths.sum())).tofile(out / "all.bin")
    np.save(out / "all.idx.npy", np.concatenate([[0], np.cumsum(lengths)]))


def ours(tokenizer_json: str, shards: list[Path], eos: int, out: Path, workers: int) -> None:
    names, _ = encode.encode_shards(shards, out / "parts", tokenizer_json, set(), eos, np.dtype(np.uint16), workers)
    encode.concatenate(names, out / "parts", out, "train", np.dtype(np.uint16))
    encode.concatenate(names, out / "parts", out, "val", np.dtype(np.uint16))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=Path, help="a directory of document shards (default: the built-in corpus)")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--vocab", type=int, default=4096)
    args = parser.parse_args()

    shards = docs.shard_paths(args.shards or builtin_shards())
    texts = read_texts(shards)
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    specials = ["<|bos|>", "<|endoftext|>", "<|pad|>"]
    sample, size = [], 0
    for t in texts:  # train the BPE on the first ~5 MB: the encoders are what is measured
        sample.append(t)
        size += len(t)
        if size > 5_000_000:
            break
    tok = bpe.train_bpe(sample, args.vocab, specials, "gpt4", bos_token="<|bos|>")
    eos = tok.token_to_id("<|endoftext|>")
    print(f"corpus: {len(texts):,} documents, {mb:.1f} MB in {len(shards)} shards; vocab {tok.get_vocab_size()}; "
          f"{os.cpu_count()} CPUs, ours with {args.workers} worker processes")

    work = Path(tempfile.mkdtemp(prefix="lmdag-bench-tok-"))
    try:
        (work / "base").mkdir()
        (work / "ours").mkdir()
        t0 = time.perf_counter()
        baseline(tok.to_str(), texts, eos, work / "base")
        t_base = time.perf_counter() - t0
        t0 = time.perf_counter()
        ours(tok.to_str(), shards, eos, work / "ours", args.workers)
        t_ours = time.perf_counter() - t0
        same = (work / "base" / "all.bin").read_bytes() == (work / "ours" / "train.bin").read_bytes()
    finally:
        shutil.rmtree(work)
    print(f"baseline (tokenizers encode_batch, 1 process): {t_base:7.2f} s  {mb / t_base:7.2f} MB/s")
    print(f"ours (pipeline.tokenize, {args.workers} processes):        {t_ours:7.2f} s  {mb / t_ours:7.2f} MB/s")
    print(f"identical tokens: {same}")
    print(f"ratio ours/baseline throughput: {t_base / t_ours:.2f}x")


if __name__ == "__main__":
    main()
