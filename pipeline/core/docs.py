"""Documents on disk: Parquet shards with columns id, text, source, meta (JSON string).

Shards are the unit of parallelism. A data stage maps a function over its input shards
(``map_shards``), writing one output shard per input shard plus the documents it dropped,
each with the reason, to ``dropped/`` — so nothing leaves a stage unaccounted for.
"""
from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

SCHEMA = pa.schema(
    [("id", pa.string()), ("text", pa.string()), ("source", pa.string()), ("meta", pa.string())]
)
DROPPED_SCHEMA = SCHEMA.append(pa.field("reason", pa.string()))
SHARD_GLOB = "shard-*.parquet"


def doc(id: str, text: str, source: str, meta: dict | None = None) -> dict:
    return {"id": id, "text": text, "source": source, "meta": json.dumps(meta or {}, ensure_ascii=False)}


def write_table(path: Path, rows: list[dict], schema: pa.Schema = SCHEMA) -> None:
    """Write rows (dicts with the schema's columns) to one zstd Parquet file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=schema)
    pq.write_table(table, path, compression="zstd")


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.parquet"


def shard_paths(directory: Path) -> list[Path]:
    return sorted(Path(directory).glob(SHARD_GLOB))


def read_rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def iter_docs(directory: Path) -> Iterator[dict]:
    for path in shard_paths(directory):
        yield from read_rows(path)


class ShardWriter:
    """Writes documents into numbered shards of at most ``max_docs`` documents."""

    def __init__(self, directory: Path, max_docs: int = 2000):
        self.directory = Path(directory)
        self.max_docs = max_docs
        self.buffer: list[dict] = []
        self.count = 0

    def add(self, row: dict) -> None:
        self.buffer.append(row)
        if len(self.buffer) >= self.max_docs:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            write_table(self.directory / shard_name(self.count), self.buffer)
            self.count += 1
            self.buffer = []

    def close(self) -> int:
        self.flush()
        return self.count


def text_bytes(rows: Iterable[dict]) -> int:
    return sum(len(r["text"].encode("utf-8")) for r in rows)


# A shard function takes the rows of one shard and returns (kept rows, [(row, reason)], extra counters).
ShardFn = Callable[[list[dict]], tuple[list[dict], list[tuple[dict, str]], dict]]


def _run_one(fn: ShardFn, in_path: Path, out_dir: Path) -> dict:
    try:
        rows = read_rows(in_path)
        kept, dropped, extra = fn(rows)
    except Exception as err:  # name the shard: the traceback alone would not
        raise RuntimeError(f"shard {in_path} failed: {type(err).__name__}: {err}") from err
    write_table(out_dir / in_path.name, kept)
    if dropped:
        write_table(
            out_dir / "dropped" / in_path.name,
            [{**row, "reason": reason} for row, reason in dropped],
            DROPPED_SCHEMA,
        )
    return {
        "docs_in": len(rows),
        "docs_kept": len(kept),
        "bytes_in": text_bytes(rows),
        "bytes_kept": text_bytes(kept),
        "dropped": dict(Counter(reason for _, reason in dropped)),
        "extra": extra,
    }


def merge_stats(parts: list[dict]) -> dict:
    """Sum per-shard stats; ``extra`` counters are summed key by key (nested one level)."""
    total = {"docs_in": 0, "docs_kept": 0, "bytes_in": 0, "bytes_kept": 0, "dropped": Counter()}
    extra: dict = {}
    for p in parts:
        for k in ("docs_in", "docs_kept", "bytes_in", "bytes_kept"):
            total[k] += p[k]
        total["dropped"].update(p["dropped"])
        for k, v in p.get("extra", {}).items():
            if isinstance(v, dict):
                extra.setdefault(k, Counter()).update(v)
            else:
                extra[k] = extra.get(k, 0) + v
    total["dropped"] = dict(sorted(total["dropped"].items()))
    total.update({k: dict(v) if isinstance(v, Counter) else v for k, v in extra.items()})
    total["shards"] = len(parts)
    return total


def map_paths(fn: ShardFn, paths: list[Path], out_dir: Path, workers: int = 1, desc: str = "") -> list[dict]:
    """Apply ``fn`` to each shard in ``paths`` (in ``workers`` processes); the stats of each, in order."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(paths), desc=desc or "shards", unit="shard", disable=None)
    parts = []
    if workers <= 1 or len(paths) <= 1:
        for p in paths:
            parts.append(_run_one(fn, p, out_dir))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for part in pool.map(_run_one, [fn] * len(paths), paths, [out_dir] * len(paths)):
                parts.append(part)
                bar.update()
    bar.close()
    return parts


def map_shards(fn: ShardFn, in_dir: Path, out_dir: Path, workers: int = 1, desc: str = "") -> dict:
    """Apply ``fn`` to every shard of ``in_dir`` (in ``workers`` processes); return merged stats."""
    paths = shard_paths(in_dir)
    if not paths:
        raise RuntimeError(f"no shards ({SHARD_GLOB}) in {in_dir}")
    return merge_stats(map_paths(fn, paths, out_dir, workers, desc))
