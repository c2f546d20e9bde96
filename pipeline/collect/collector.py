"""From records to shard rows: every record kept or set aside with a reason, ids as the user gave them.

A document keeps its own id (the ``id_key`` field). Only a record without one gets an id
made from where it was read: ``<source>/<path relative to the source root>:<line>`` (for a
single file, ``local/<file name>:<line>``; for the built-in corpus, ``<source>:<local id>``),
so ids never carry a machine's paths. A second document with an id already taken in the run
is set aside as ``duplicate_id``, naming where the first one was read: ids stay unique
(dedup clusters and tokenize's split are keyed by them) and nothing is renamed silently.

The accounting is counted three ways apart, so that it can fail: ``docs_in`` is what the
reading loops took from the readers (``Collector.took``), ``docs_kept`` the rows the shards on
disk hold, ``dropped`` the reasons of the rows the dropped/ shard holds. A record lost between
reading and writing breaks ``docs_in == docs_kept + sum(dropped)``, which the stage contract checks.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from pipeline.collect import builtin, readers
from pipeline.core.docs import DROPPED_SCHEMA, ShardWriter, doc, shard_paths, write_table
from pipeline.core.errors import StageError

ID_KEY = "id"  # the field holding a record's own id, as datatrove's id_key


def id_key(cfg) -> str:
    return getattr(cfg, "id_key", ID_KEY)


def _unencodable(rec: readers.Record) -> str | None:
    """Why the record cannot be stored as UTF-8 (JSON allows lone surrogates such as \\ud800)."""
    for what, value in (("text", rec.text), ("id", rec.id or ""), ("meta", json.dumps(rec.meta, ensure_ascii=False))):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            return f"{what} holds {err.object[err.start:err.end]!r} at character {err.start}, which UTF-8 cannot store"
    return None


def _printable(text: str) -> str:
    return text.encode("utf-8", "replace").decode("utf-8")


class Collector:
    """Turns records into shard rows, counting every one as kept or dropped with a reason."""

    def __init__(self, cfg, out: Path, log):
        self.cfg, self.log = cfg, log
        self.writer = ShardWriter(out, cfg.shard_docs)
        self.dropped_rows: list[dict] = []
        self.read = 0  # records taken from the readers, counted by the reading loops (took)
        self.sources: dict[str, dict] = {}
        self.samples: dict[str, list] = {}
        self.first_seen: dict[str, str] = {}  # id -> where its document was read

    def _check(self, rec: readers.Record, source: str, doc_id: str) -> None:
        """Set a reason on a record that cannot be kept as it is."""
        if rec.reason is not None:
            return
        problem = _unencodable(rec)
        if problem:
            rec.reason, rec.raw, rec.meta = "not_utf8", _printable(rec.text[:readers.RAW_CHARS]), {"error": problem}
            rec.id = _printable(rec.id) if rec.id else None
        elif not rec.text.strip():
            rec.reason, rec.raw = "empty", rec.text
        elif len(rec.text.encode("utf-8")) > self.cfg.max_doc_bytes:
            rec.reason, rec.raw = "too_long", rec.text[:readers.RAW_CHARS]
            rec.meta = {**rec.meta, "bytes": len(rec.text.encode("utf-8"))}
        elif doc_id in self.first_seen:
            rec.reason, rec.raw = "duplicate_id", rec.text[:readers.RAW_CHARS]
            rec.meta = {**rec.meta, "first_seen": self.first_seen[doc_id]}

    def took(self, records, source: str):
        """The records of ``records`` one by one, each counted as read from ``source``."""
        s = self.sources.setdefault(source, {"read": 0, "documents": 0, "bytes": 0, "dropped": 0})
        for rec in records:
            self.read += 1
            s["read"] += 1
            yield rec

    def add(self, source: str, rec: readers.Record, made_id: str) -> None:
        """One record read from ``source`` (through ``took``); ``made_id`` is its id when it brings none."""
        s = self.sources[source]
        doc_id = rec.id or made_id
        self._check(rec, source, doc_id)
        if rec.reason is not None:
            s["dropped"] += 1
            self.log.warning("dropped %s %s: %s %s", source, rec.where, rec.reason, rec.meta.get("error", ""))
            meta = {**rec.meta, "where": rec.where}
            self.dropped_rows.append({**doc(rec.id or made_id, _printable(rec.raw), source, meta), "reason": rec.reason})
            return
        self.first_seen[doc_id] = f"{source} {rec.where}"
        self.writer.add(doc(doc_id, rec.text, source, rec.meta))
        s["documents"] += 1
        s["bytes"] += len(rec.text.encode("utf-8"))
        sample = self.samples.setdefault(source, [])
        if len(sample) < self.cfg.sample_size:
            sample.append({"id": doc_id, "text": rec.text[:600]})

    def close(self, out: Path) -> dict:
        import pyarrow.parquet as pq

        shards = self.writer.close()
        dropped_file = out / "dropped" / "shard-00000.parquet"
        if self.dropped_rows:
            write_table(dropped_file, self.dropped_rows, DROPPED_SCHEMA)
        with open(out / "samples.jsonl", "w") as f:
            for source, items in self.samples.items():
                for item in items:
                    f.write(json.dumps({"source": source, **item}, ensure_ascii=False) + "\n")
        # What the files hold, not what add() meant to write.
        kept = sum(pq.ParquetFile(p).metadata.num_rows for p in shard_paths(out))
        reasons = pq.read_table(dropped_file, columns=["reason"]).column("reason").to_pylist() if dropped_file.is_file() else []
        return {
            "docs_in": self.read,
            "docs_kept": kept,
            "bytes_kept": sum(s["bytes"] for s in self.sources.values()),
            "dropped": dict(Counter(reasons)),
            "sources": self.sources,
            "shards": shards,
        }


def read_builtin(cfg, col: Collector) -> None:
    unknown = set(cfg.builtin_groups) - set(builtin.GROUPS)
    if unknown:
        raise StageError(f"collect.builtin_groups: unknown group(s) {sorted(unknown)}; "
                         f"choose from {builtin.GROUPS}")
    for name, (group, read) in builtin.SOURCES.items():
        if group not in cfg.builtin_groups:
            continue
        col.log.info("built-in source %s", name)
        for rec in col.took(_builtin_records(read(), name, group, cfg.max_docs_per_source), name):
            col.add(name, rec, f"{name}:{rec.where}")


def _builtin_records(items, name: str, group: str, cap: int):
    """A built-in reader's documents and set-aside items as records, up to ``cap`` documents
    (what it skips does not use up the cap: the ci recipe's few pages are articles)."""
    documents = 0
    for item in tqdm(items, desc=name, unit="doc", disable=None, leave=False):
        if isinstance(item, builtin.Skipped):
            yield readers.Record(item.local_id, reason=item.reason, meta={"group": group, **item.meta})
            continue
        if cap and documents >= cap:
            return
        documents += 1
        local_id, text, meta = item
        yield readers.Record(local_id, text, meta={"group": group, **meta})


def read_local(spec: str, index: int, cfg, col: Collector, skipped: Counter) -> None:
    try:
        files, unsupported = readers.expand(spec)
    except FileNotFoundError as err:
        raise StageError(f"collect.sources[{index}]: {err}") from None
    for path in unsupported:
        skipped[path.suffix or "(no suffix)"] += 1
        col.log.warning("skipped %s: unsupported format", path)
    root = readers.root(spec)
    single_file = Path(spec).is_file()
    source = f"local/{Path(spec).name if single_file else (root.name or root.resolve().name)}"
    cap, n = cfg.max_docs_per_source, 0
    for path in tqdm(files, desc=source, unit="file", disable=None, leave=False):
        if cap and n >= cap:
            return
        name = path.name if single_file else path.relative_to(root).as_posix()
        prefix = "local/" if single_file else f"{source}/"
        found = 0
        records = readers.read_file(path, name, cfg.text_key, id_key(cfg), cfg.max_doc_bytes)
        for rec in col.took(_capped(records, cap - n if cap else 0), source):
            col.add(source, rec, prefix + rec.where)
            n, found = n + 1, found + 1
        if found == 0:
            col.log.warning("%s holds no documents", path)


def _capped(records, cap: int):
    """The first ``cap`` records (all of them when cap is 0)."""
    for i, rec in enumerate(records):
        if cap and i >= cap:
            return
        yield rec


def read_huggingface(spec: str, cfg, col: Collector) -> None:
    _, name, *rest = spec.split(":")
    split = rest[0] if rest else "train"
    try:
        import datasets
    except ImportError:
        raise StageError(f"collect: source {spec!r} needs the `datasets` package: pip install datasets") from None
    try:
        stream = datasets.load_dataset(name, split=split, streaming=True)
        rows = _capped(enumerate(stream), cfg.max_docs_per_source)
        for rec in col.took((_hf_record(i, row, split, cfg) for i, row in rows), f"hf/{name}"):
            col.add(f"hf/{name}", rec, f"hf/{name}:{rec.where}")
    except Exception as err:  # network and hub errors come in many types
        raise StageError(
            f"collect: could not stream Hugging Face dataset {name!r} (split {split!r}): "
            f"{type(err).__name__}: {err}\nThis needs network access to the Hub; offline, use local "
            f"files or the built-in corpus."
        ) from None


def _hf_record(i: int, row: dict, split: str, cfg) -> readers.Record:
    text, (doc_id, bad_id) = row.get(cfg.text_key), readers.user_id(row.get(id_key(cfg)))
    reason = "missing_text_field" if not isinstance(text, str) else ("bad_id" if bad_id else None)
    meta = {k: v for k, v in row.items() if k not in (cfg.text_key, id_key(cfg)) and isinstance(v, (str, int, float))}
    return readers.Record(f"{split}:{i}", text if reason is None else None, reason=reason,
                          meta={"error": bad_id} if bad_id else meta, id=doc_id)
