"""collect: gather raw text into Parquet shards (id, text, source, meta).

Sources, in ``collect.sources``:
    builtin                    the built-in corpus (all groups in ``builtin_groups``)
    path, directory or glob    .txt/.md, .jsonl(.gz/.zst), .parquet, .warc(.gz)
    hf:NAME[:SPLIT]            a Hugging Face dataset, streamed (needs network and `datasets`)

A record's own id (its ``id`` field; a WARC record's WARC-Record-ID) is kept as it came; one
is made only where a record has none (see collector.py). Every record read is kept or set
aside under dropped/ with a reason and where it was read (file:line).

Usage:  python -m pipeline collect sources='[my_docs/]' out=raw/
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.collect import builtin
from pipeline.collect.collector import Collector, read_builtin, read_huggingface, read_local
from pipeline.core.docs import read_rows, shard_paths, write_table
from pipeline.core.canaries import CanaryConfig, plant_canaries
from pipeline.core.errors import StageError
from pipeline.core.step import Input, unkeyed

INPUTS: dict[str, Input] = {}  # a source stage: it reads what its config names
VERSION = "3"  # 3: what the built-in readers skip is set aside under a reason (redirect, file_too_large ...)


@dataclass
class Config:
    sources: list[str] = field(default_factory=lambda: ["builtin"])
    builtin_groups: list[str] = field(default_factory=lambda: list(builtin.GROUPS))
    # Cap per source (0 = everything); the tiny `ci` experiment uses it.
    max_docs_per_source: int = 0
    # Larger documents are set aside as `too_long` (bytes of UTF-8).
    max_doc_bytes: int = 2_000_000
    text_key: str = "text"
    id_key: str = "id"  # the field holding a record's own id, kept as given (datatrove's id_key)
    shard_docs: int = 500
    sample_size: int = unkeyed(3)  # documents per source shown in the report
    # Secret-Sharer canaries planted into the raw text; evaluate measures their exposure.
    canaries: CanaryConfig = field(default_factory=CanaryConfig)
    # Where canaries go: "builtin" (the built-in corpus only: a user's files are never altered
    # unless they ask) or "all".
    canaries_into: str = "builtin"


def _plant(canaries: CanaryConfig, out: Path, into_all: bool) -> int:
    """Rewrite the shards with canaries inserted; documents stay the same ones (accounting holds)."""
    paths = shard_paths(out)
    shards = [read_rows(p) for p in paths]
    rows = [r for shard in shards for r in shard]
    hosts = [i for i, r in enumerate(rows) if into_all or r["source"] in builtin.SOURCES]
    if not hosts:
        return 0
    planted_rows, planted = plant_canaries([rows[i] for i in hosts], canaries)
    for i, row in zip(hosts, planted_rows):
        rows[i] = row
    start = 0
    for path, shard in zip(paths, shards):
        write_table(path, rows[start:start + len(shard)])
        start += len(shard)
    with open(out / "canaries.jsonl", "w") as f:
        for c in planted:
            f.write(json.dumps(c) + "\n")
    return len(planted) * canaries.repeats


def run(cfg: Config, inputs: dict, out: Path, log) -> dict:
    col = Collector(cfg, out, log)
    skipped: Counter = Counter()
    if not cfg.sources:
        raise StageError("collect.sources is empty: name at least one source (e.g. [builtin])")
    for i, spec in enumerate(cfg.sources):
        if spec == "builtin":
            read_builtin(cfg, col)
        elif spec.startswith("hf:"):
            read_huggingface(spec, cfg, col)
        else:
            read_local(spec, i, cfg, col, skipped)
    stats = col.close(out)
    stats["skipped_files"] = dict(skipped)
    if cfg.canaries_into not in ("builtin", "all"):
        raise StageError(f"collect.canaries_into: {cfg.canaries_into!r} is not one of builtin, all")
    if cfg.canaries.count:
        stats["canaries_planted"] = _plant(cfg.canaries, out, cfg.canaries_into == "all")
    if stats["docs_kept"] == 0:
        raise StageError(f"collect: no documents kept from {cfg.sources} "
                         f"(dropped: {stats['dropped'] or 'none'}); see {out / 'log.txt'}")
    return stats
