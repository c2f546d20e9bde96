"""Step 4 (per shard): drop all but each cluster's keeper; record cluster id and size on every document.

Every document gets ``dedup_cluster`` (the keeper's id; its own id when it has no duplicate)
and ``dedup_cluster_size`` in its meta, kept or dropped, so ``dropped/`` shows what went
together. A shard reads only its own assignments: memory is one shard's worth.
"""
from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline.core import docs


def with_cluster(meta: str | None, cluster: str, size: int) -> str:
    try:
        m = json.loads(meta) if meta else {}
    except json.JSONDecodeError:
        m = {"meta": meta}  # not JSON: kept verbatim under "meta" rather than lost
    if not isinstance(m, dict):
        m = {"meta": m}
    m["dedup_cluster"], m["dedup_cluster_size"] = cluster, size
    return json.dumps(m, ensure_ascii=False)


def remove_shard(in_path: Path, assign_dir: Path, out_dir: Path, eval_index=None) -> dict:
    try:
        rows = docs.read_rows(in_path)
        assign_file = Path(assign_dir) / in_path.name
        assign = {a["row"]: a for a in pq.read_table(assign_file).to_pylist()} if assign_file.is_file() else {}
        kept, dropped = [], []
        for i, row in enumerate(rows):
            a = assign.get(i) or {"cluster": row["id"], "size": 1, "action": "keep"}
            row = {**row, "meta": with_cluster(row["meta"], a["cluster"], a["size"])}
            if a["action"] == "keep" and eval_index is not None and eval_index.overlaps(row["text"]):
                dropped.append({**row, "reason": "eval_overlap"})
            elif a["action"] == "keep":
                kept.append(row)
            else:
                dropped.append({**row, "reason": a["action"]})
    except Exception as err:  # name the shard: the traceback alone would not
        raise RuntimeError(f"dedup remove: shard {in_path} failed: {type(err).__name__}: {err}") from err
    docs.write_table(Path(out_dir) / in_path.name, kept)
    if dropped:
        docs.write_table(Path(out_dir) / "dropped" / in_path.name, dropped, docs.DROPPED_SCHEMA)
    return {
        "docs_in": len(rows),
        "docs_kept": len(kept),
        "bytes_in": docs.text_bytes(rows),
        "bytes_kept": docs.text_bytes(kept),
        "dropped": dict(Counter(r["reason"] for r in dropped)),
    }


def remove_all(source: Path, assign_dir: Path, out: Path, workers: int, eval_index=None) -> dict:
    paths = docs.shard_paths(source)
    fn = partial(remove_shard, assign_dir=assign_dir, out_dir=out, eval_index=eval_index)
    bar = tqdm(total=len(paths), desc="dedup remove", unit="shard", disable=None)
    parts = []
    if workers <= 1 or len(paths) <= 1:
        for p in paths:
            parts.append(fn(p))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for part in pool.map(fn, paths):
                parts.append(part)
                bar.update()
    bar.close()
    return docs.merge_stats(parts)
