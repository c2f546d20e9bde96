"""A data step as many jobs, one per slice of its shards: for any stage whose work is a shard
function (``docs.map_shards``).

In one job, a data step maps its shard function over the input shards in ``workers``
processes. With ``shard_jobs: N`` (N > 0) the step is N + 1 Snakemake jobs instead, N of
them at once on a cluster:

    shards   job i of N   the shard function over input shards i, i+N, i+2N, ...
                          -> results/<step>_shards/<key>/<i>-of-<N>/
    gather   the step     links every part's shards into the step's directory and sums their
                          stats in shard order -> results/<step>/<key>/

The step's directory is the same either way (the same files, the same stats.json), so N is
an unkeyed setting: a laptop (N = 0) and a thousand cluster jobs (N = 1000) share one key.
A stage declares the part and runs through ``map_or_gather``:

    PARTS = {"shards": ShardPart(lambda cfg: partial(filter_shard, cfg))}
    def run(cfg, inputs, out, log):
        return map_or_gather(PARTS["shards"], cfg, inputs, out, log, desc="filter")

and workflow/rules/steps.smk gives it a ``<stage>_shards`` rule (``run-step PLAN --part shards
<i>-of-<N>``); the stage's rule then passes the parts' directory as ``--input shards=DIR``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pipeline.core import docs
from pipeline.core.errors import StageError
from pipeline.core.publish import atomic_dir, is_complete

PART = "shards"  # the part's name in PARTS, and the role of its directory in the gather
RECORDS = "shards.json"  # in each part directory: every shard it read, with that shard's stats
_NAME = re.compile(r"(\d+)-of-(\d+)")


def part_name(index: int, count: int) -> str:
    return f"{index:05d}-of-{count:05d}"


def part_names(count: int) -> list[str]:
    return [part_name(i, count) for i in range(count)]


def parse_part(name: str) -> tuple[int, int]:
    m = _NAME.fullmatch(name)
    if not m or int(m.group(1)) >= int(m.group(2)):
        raise StageError(f"shard part {name!r} is not <index>-of-<count> with index < count (e.g. 00003-of-00008)")
    return int(m.group(1)), int(m.group(2))


def slice_of(paths: list[Path], index: int, count: int) -> list[Path]:
    """Job ``index`` of ``count`` reads every count-th shard: balanced when shard sizes drift."""
    return paths[index::count]


@dataclass(frozen=True)
class ShardPart:
    """The per-shard part of a data stage. ``shard_fn(cfg)`` is the stage's shard function
    (docs.ShardFn); ``jobs(cfg)`` the number of part jobs (0 = the step runs as one job)."""

    shard_fn: Callable
    jobs: Callable = lambda cfg: cfg.shard_jobs
    role: str = "docs"  # the input role holding the document shards

    def __call__(self, cfg, inputs: dict, dirs: dict, args: list[str], log) -> dict:
        """``run-step PLAN --part shards <i>-of-<N>``: one slice into its part directory."""
        if len(args) != 1:
            raise StageError(f"the shards part takes one argument, <index>-of-<count>; got {args}")
        index, count = parse_part(args[0])
        paths = docs.shard_paths(inputs[self.role])
        mine = slice_of(paths, index, count)
        log.info("part %s: %d of %d shards", args[0], len(mine), len(paths))
        with atomic_dir(Path(dirs[PART]) / args[0]) as tmp:
            stats = docs.map_paths(self.shard_fn(cfg), mine, tmp, getattr(cfg, "workers", 1), desc=f"shards {args[0]}")
            records = [{"shard": p.name, "stats": s} for p, s in zip(mine, stats)]
            (tmp / RECORDS).write_text(json.dumps(records))
            totals = docs.merge_stats(stats) if stats else {"shards": 0}
            (tmp / "stats.json").write_text(json.dumps(totals, indent=1))  # the completion marker, last
        return totals


def _link(src: Path, dst: Path) -> None:
    """A hard link (the part directories are removed after the gather), a copy across devices."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def gather(parts_dir: Path, count: int, in_dir: Path, out: Path, log) -> dict:
    """Every part's shards into ``out``, their stats merged in shard order (as map_shards
    would); a missing part, or a shard read twice or never, is an error naming it."""
    records = []
    for name in part_names(count):
        part = Path(parts_dir) / name
        if not is_complete(part):
            raise StageError(f"{part}: part {name} of this step is missing or unfinished; rerun the step "
                             f"(Snakemake reruns its shard jobs)")
        for rec in json.loads((part / RECORDS).read_text()):
            for sub in ("", "dropped"):
                src = part / sub / rec["shard"]
                if src.is_file():
                    _link(src, out / sub / rec["shard"])
            records.append(rec)
    expected = [p.name for p in docs.shard_paths(in_dir)]
    read = sorted(r["shard"] for r in records)
    if read != expected:
        missing, twice = sorted(set(expected) - set(read)), sorted({s for s in read if read.count(s) > 1})
        extra = sorted(set(read) - set(expected))
        raise StageError(f"{parts_dir}: the {count} parts do not cover {in_dir} once: missing {missing[:5]}, "
                         f"read twice {twice[:5]}, not in the input {extra[:5]}; rerun the step")
    if not records:
        raise StageError(f"no shards ({docs.SHARD_GLOB}) in {in_dir}")
    log.info("gathered %d shards from %d part jobs in %s", len(records), count, parts_dir)
    return docs.merge_stats([r["stats"] for r in sorted(records, key=lambda r: r["shard"])])


def map_or_gather(part: ShardPart, cfg, inputs: dict, out: Path, log, desc: str) -> dict:
    """The step's stats: gathered from its part jobs (input ``shards``), or mapped here."""
    if PART in inputs:
        return gather(inputs[PART], part.jobs(cfg), inputs[part.role], out, log)
    return docs.map_shards(part.shard_fn(cfg), inputs[part.role], out, getattr(cfg, "workers", 1), desc=desc)


def sharded_part(module) -> ShardPart | None:
    """The stage's per-shard part, if it declares one (``PARTS["shards"]``)."""
    part = getattr(module, "PARTS", {}).get(PART)
    return part if isinstance(part, ShardPart) else None
