"""collect: gather raw text into Parquet shards (id, text, source, meta).

Sources, in ``collect.sources``:
    builtin                    the built-in corpus (all groups in ``builtin_groups``)
    path, directory or glob    .txt/.md, .jsonl(.gz/.zst), .parquet, .warc(.gz)
    hf:NAME[:SPLIT]            a Hugging Face dataset, streamed (needs network and `datasets`)

Usage:  python -m pipeline collect sources='[my_docs/]' out=raw/
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from pipeline.collect import builtin, readers
from pipeline.core.docs import DROPPED_SCHEMA, ShardWriter, doc, read_rows, shard_paths, write_table
from pipeline.core.canaries import CanaryConfig, plant_canaries
from pipeline.core.errors import StageError

INPUTS: list[str] = []
VERSION = "1"


@dataclass
class Config:
    sources: list[str] = field(default_factory=lambda: ["builtin"])
    builtin_groups: list[str] = field(default_factory=lambda: list(builtin.GROUPS))
    # Cap per source (0 = everything); the tiny `ci` experiment uses it.
    max_docs_per_source: int = 0
    # Larger documents are set aside as `too_long` (bytes of UTF-8).
    max_doc_bytes: int = 2_000_000
    text_key: str = "text"
    shard_docs: int = 500
    sample_size: int = 3
    # Secret-Sharer canaries planted into the raw text; evaluate measures their exposure.
    canaries: CanaryConfig = field(default_factory=CanaryConfig)
    # Where canaries go: "builtin" (the built-in corpus only: a user's files are never altered
    # unless they ask) or "all".
    canaries_into: str = "builtin"


class _Collector:
    """Turns records into shard rows, counting every one as kept or dropped with a reason."""

    def __init__(self, cfg: Config, out: Path, log):
        self.cfg, self.log = cfg, log
        self.writer = ShardWriter(out, cfg.shard_docs)
        self.dropped_rows: list[dict] = []
        self.dropped: Counter = Counter()
        self.sources: dict[str, dict] = {}
        self.samples: dict[str, list] = {}
        self.seen_ids: set[str] = set()

    def add(self, source: str, rec: readers.Record) -> None:
        s = self.sources.setdefault(source, {"documents": 0, "bytes": 0, "dropped": 0})
        if rec.reason is None:
            if not rec.text.strip():
                rec.reason, rec.raw = "empty", rec.text
            elif len(rec.text.encode("utf-8")) > self.cfg.max_doc_bytes:
                rec.reason, rec.raw = "too_long", rec.text[:2000]
                rec.meta = {**rec.meta, "bytes": len(rec.text.encode("utf-8"))}
        doc_id = f"{source}:{rec.where}"
        if doc_id in self.seen_ids:  # same file named twice by overlapping sources
            doc_id = f"{doc_id}#{hashlib.sha1(str(len(self.seen_ids)).encode()).hexdigest()[:6]}"
        self.seen_ids.add(doc_id)
        if rec.reason is not None:
            self.dropped[rec.reason] += 1
            s["dropped"] += 1
            self.log.warning("dropped %s: %s %s", rec.where, rec.reason, rec.meta.get("error", ""))
            self.dropped_rows.append({**doc(doc_id, rec.raw, source, rec.meta), "reason": rec.reason})
            return
        row = doc(doc_id, rec.text, source, rec.meta)
        self.writer.add(row)
        s["documents"] += 1
        s["bytes"] += len(rec.text.encode("utf-8"))
        sample = self.samples.setdefault(source, [])
        if len(sample) < self.cfg.sample_size:
            sample.append({"id": doc_id, "text": rec.text[:600]})

    def close(self, out: Path) -> dict:
        shards = self.writer.close()
        if self.dropped_rows:
            write_table(out / "dropped" / "shard-00000.parquet", self.dropped_rows, DROPPED_SCHEMA)
        with open(out / "samples.jsonl", "w") as f:
            for source, items in self.samples.items():
                for item in items:
                    f.write(json.dumps({"source": source, **item}, ensure_ascii=False) + "\n")
        kept = sum(s["documents"] for s in self.sources.values())
        return {
            "docs_in": kept + sum(self.dropped.values()),
            "docs_kept": kept,
            "bytes_kept": sum(s["bytes"] for s in self.sources.values()),
            "dropped": dict(self.dropped),
            "sources": self.sources,
            "shards": shards,
        }


def _builtin(cfg: Config, col: _Collector) -> None:
    unknown = set(cfg.builtin_groups) - set(builtin.GROUPS)
    if unknown:
        raise StageError(f"collect.builtin_groups: unknown group(s) {sorted(unknown)}; "
                         f"choose from {builtin.GROUPS}")
    for name, (group, read) in builtin.SOURCES.items():
        if group not in cfg.builtin_groups:
            continue
        col.log.info("built-in source %s", name)
        for i, (local_id, text, meta) in enumerate(tqdm(read(), desc=name, unit="doc", disable=None, leave=False)):
            if cfg.max_docs_per_source and i >= cfg.max_docs_per_source:
                break
            col.add(name, readers.Record(local_id, text, meta={"group": group, **meta}))


def _local(spec: str, index: int, cfg: Config, col: _Collector, skipped: Counter) -> None:
    try:
        files, unsupported = readers.expand(spec)
    except FileNotFoundError as err:
        raise StageError(f"collect.sources[{index}]: {err}") from None
    for path in unsupported:
        skipped[path.suffix or "(no suffix)"] += 1
        col.log.warning("skipped %s: unsupported format", path)
    source = f"local/{Path(spec.rstrip('/')).name or spec}"
    n = 0
    for path in tqdm(files, desc=source, unit="file", disable=None, leave=False):
        try:
            for rec in readers.read_file(path, cfg.text_key):
                if cfg.max_docs_per_source and n >= cfg.max_docs_per_source:
                    return
                col.add(source, rec)
                n += 1
        except (ValueError, OSError, EOFError) as err:
            raise StageError(f"collect: cannot read {path}: {err}") from None
        if n == 0:
            col.log.warning("%s holds no documents", path)


def _huggingface(spec: str, cfg: Config, col: _Collector) -> None:
    _, name, *rest = spec.split(":")
    split = rest[0] if rest else "train"
    try:
        import datasets
    except ImportError:
        raise StageError(f"collect: source {spec!r} needs the `datasets` package: pip install datasets") from None
    try:
        stream = datasets.load_dataset(name, split=split, streaming=True)
        for i, row in enumerate(stream):
            if cfg.max_docs_per_source and i >= cfg.max_docs_per_source:
                break
            text = row.get(cfg.text_key)
            rec = readers.Record(f"{name}:{i}", text if isinstance(text, str) else None,
                                 reason=None if isinstance(text, str) else "missing_text_field",
                                 meta={k: v for k, v in row.items() if k != cfg.text_key and isinstance(v, (str, int, float))})
            col.add(f"hf/{name}", rec)
    except Exception as err:  # network and hub errors come in many types
        raise StageError(
            f"collect: could not stream Hugging Face dataset {name!r} (split {split!r}): "
            f"{type(err).__name__}: {err}\nThis needs network access to the Hub; offline, use local "
            f"files or the built-in corpus."
        ) from None


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
    col = _Collector(cfg, out, log)
    skipped: Counter = Counter()
    if not cfg.sources:
        raise StageError("collect.sources is empty: name at least one source (e.g. [builtin])")
    for i, spec in enumerate(cfg.sources):
        if spec == "builtin":
            _builtin(cfg, col)
        elif spec.startswith("hf:"):
            _huggingface(spec, cfg, col)
        else:
            _local(spec, i, cfg, col, skipped)
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
