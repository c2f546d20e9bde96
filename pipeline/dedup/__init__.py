"""dedup: exact and MinHash-LSH near-duplicate removal, one document kept per cluster.

Four parts, each a separate Snakemake rule so a cluster executor can spread the per-shard ones
(workflow/rules/dedup.smk); for a step named ``dedup`` with key K:

    signatures  per shard   exact key, MinHash signature, LSH band keys    results/dedup_signatures/K/
    buckets     gather      exact groups, band buckets -> candidate pairs  results/dedup_buckets/K/
    clusters    gather      verify pairs, union-find, pick keepers         results/dedup_clusters/K/
    remove      per shard   drop duplicates, record cluster id and size    results/dedup/K/ (the step)

Run on your own files (all four steps in one process):

    python -m pipeline dedup in=my_docs/ out=deduped/ threshold=0.85 keep=longest workers=4

Dropped documents carry the reason ``exact_duplicate`` or ``near_duplicate``; every document's
meta gets ``dedup_cluster`` (the id of the document kept for its cluster) and
``dedup_cluster_size``. ``examples.jsonl`` shows the largest clusters.
"""
from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from tqdm import tqdm

from pipeline.core import docs
from pipeline.dedup.buckets import find_candidates
from pipeline.dedup.clusters import build_clusters
from pipeline.dedup.minhash import candidate_probability, lsh_params
from pipeline.dedup.remove import remove_all
from pipeline.dedup.signatures import signature_file, write_shard_signatures
from pipeline.core.errors import StageError
from pipeline.core.publish import atomic_dir
from pipeline.core.step import Input, unkeyed

INPUTS = {"docs": Input("document shards to deduplicate")}
VERSION = "2"


@dataclass
class Config:
    # Shingles are word n-grams; 5 as in datatrove and Lee et al. 2022 (Gopher uses 5-13).
    ngram: int = 5
    # Jaccard similarity of shingle sets at or above which two documents are near-duplicates
    # (0.8: datasketch's and text-dedup's usual setting; datatrove's 14x8 bands sit near 0.72).
    threshold: float = 0.8
    # MinHash permutations: datasketch's default 128 (datatrove uses 112).
    num_perm: int = 128
    # LSH bands x rows (bands * rows <= num_perm). 0 and 0: derived from the threshold, see
    # pipeline/dedup/minhash.py:lsh_params (128 perms, 0.8, verified -> 21 x 6).
    bands: int = 0
    rows: int = 0
    # How candidate pairs are confirmed: exact (Jaccard of the shingle sets, re-read from the
    # shards), estimated (signature agreement), none (every LSH candidate counts, as datatrove).
    verify: str = "exact"
    # With verification, the derived bands x rows propose a pair at exactly the threshold with
    # at least this probability (more above it).
    candidate_recall: float = 0.99
    # Which document of a cluster is kept: first (in input order) or longest (ties: first).
    keep: str = "first"
    # In a band bucket each document is paired with at most this many before it: all pairs in
    # normal buckets, bounded work in a pathological one (thousands of templated pages).
    bucket_window: int = 64
    # Seed of the MinHash permutations (a dedup-local seed: a training seed sweep must not rerun dedup).
    seed: int = 1
    # Processes for the per-shard steps when run in one process.
    workers: int = unkeyed(1)
    # Clusters shown in examples.jsonl and the report, of each kind (near / exact).
    sample_size: int = unkeyed(5)
    # Decontamination: drop training documents sharing a word n-gram with these eval tasks
    # (names or task YAMLs, as in evaluate.tasks), GPT-3's 13-grams; reason `eval_overlap`.
    remove_eval_overlap: list[str] = field(default_factory=list)
    eval_ngram: int = 13


VERIFY = ("exact", "estimated", "none")
KEEP = ("first", "longest")


def lsh_shape(cfg: Config) -> tuple[int, int]:
    """(bands, rows) after checking the config; a mistake names its key."""
    if cfg.ngram < 1 or cfg.ngram > 64:
        raise StageError(f"dedup.ngram must be in 1..64, got {cfg.ngram}")
    if not 0 < cfg.threshold <= 1:
        raise StageError(f"dedup.threshold must be in (0, 1], got {cfg.threshold}")
    if cfg.verify not in VERIFY:
        raise StageError(f"dedup.verify must be one of {VERIFY}, got {cfg.verify!r}")
    if cfg.keep not in KEEP:
        raise StageError(f"dedup.keep must be one of {KEEP}, got {cfg.keep!r}")
    if cfg.num_perm < 1:
        raise StageError(f"dedup.num_perm must be >= 1, got {cfg.num_perm}")
    if not 0 < cfg.candidate_recall < 1:
        raise StageError(f"dedup.candidate_recall must be in (0, 1), got {cfg.candidate_recall}")
    if cfg.bucket_window < 1:
        raise StageError(f"dedup.bucket_window must be >= 1, got {cfg.bucket_window}")
    if (cfg.bands == 0) != (cfg.rows == 0):
        raise StageError(f"dedup.bands and dedup.rows go together (both 0 = derive them); got "
                         f"bands={cfg.bands} rows={cfg.rows}")
    if cfg.bands:
        if cfg.bands < 0 or cfg.rows < 0 or cfg.bands * cfg.rows > cfg.num_perm:
            raise StageError(f"dedup.bands x dedup.rows = {cfg.bands} x {cfg.rows} must be positive and "
                             f"at most dedup.num_perm = {cfg.num_perm}")
        return cfg.bands, cfg.rows
    return lsh_params(cfg.threshold, cfg.num_perm, cfg.verify, cfg.candidate_recall)


def input_shards(source: Path) -> list[Path]:
    paths = docs.shard_paths(source)
    if not paths:
        raise StageError(f"dedup: no document shards ({docs.SHARD_GLOB}) in {source}")
    return paths


def publish(target: Path, build) -> dict:
    """Run ``build(tmp_dir) -> stats`` into a part directory published atomically with its stats.json."""
    started = time.time()
    with atomic_dir(target) as tmp:
        stats = build(tmp)
        stats["wall_s"] = round(time.time() - started, 3)
        (tmp / "stats.json").write_text(json.dumps(stats, indent=1))
    return stats


# ---------------------------------------------------------------- the parts

def step_signatures(cfg: Config, inputs: dict, dirs: dict, args: list[str], log) -> None:
    """Signature files of the shards named in ``args`` (all shards when none)."""
    bands, rows = lsh_shape(cfg)
    source = inputs["docs"]
    shards = [source / a for a in args] if args else input_shards(source)
    for s in shards:
        if not s.is_file():
            raise StageError(f"dedup signatures: no shard {s}")
    fn = partial(_signatures_of, cfg=cfg, bands=bands, rows=rows, out_dir=dirs["signatures"])
    bar = tqdm(total=len(shards), desc="dedup signatures", unit="shard", disable=None)
    if cfg.workers <= 1 or len(shards) <= 1:
        for s in shards:
            fn(s)
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=cfg.workers) as pool:
            for _ in pool.map(fn, shards):
                bar.update()
    bar.close()


def _signatures_of(shard: Path, cfg: Config, bands: int, rows: int, out_dir: Path) -> int:
    return write_shard_signatures(shard, signature_file(out_dir, shard), cfg.ngram, cfg.num_perm, cfg.seed,
                                  bands, rows, keep_sig=cfg.verify == "estimated")


def step_buckets(cfg: Config, inputs: dict, dirs: dict, args: list[str], log) -> dict:
    bands, rows = lsh_shape(cfg)
    shards = input_shards(inputs["docs"])
    files = [signature_file(dirs["signatures"], s) for s in shards]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise StageError(f"dedup buckets: signature files missing (run the signatures step first): {missing[:3]}")
    return publish(dirs["buckets"], lambda tmp: find_candidates(
        files, [s.name for s in shards], bands, cfg.bucket_window, tmp, log))


def step_clusters(cfg: Config, inputs: dict, dirs: dict, args: list[str], log) -> dict:
    bands, rows = lsh_shape(cfg)
    bucket_stats = json.loads((dirs["buckets"] / "stats.json").read_text())

    def build(tmp: Path) -> dict:
        summary = build_clusters(cfg, inputs["docs"], dirs["buckets"], dirs["signatures"], tmp, log)
        lsh = {"ngram": cfg.ngram, "bands": bands, "rows": rows, "num_perm": cfg.num_perm, "threshold": cfg.threshold,
               "verify": cfg.verify,
               "candidate_probability_at_threshold": round(float(candidate_probability(cfg.threshold, bands, rows)), 4)}
        return {**summary, "lsh": lsh, "buckets": bucket_stats}

    return publish(dirs["clusters"], build)


# Scatter/gather parts, in order; `python -m pipeline run-step PLAN --part NAME [ARGS]` runs one
# into results/<step>_<part>/<key>/ (workflow/rules/dedup.smk).
PARTS = {"signatures": step_signatures, "buckets": step_buckets, "clusters": step_clusters}


def run(cfg: Config, inputs: dict, out: Path, log) -> dict:
    """The removal; the earlier parts run here too unless Snakemake ran them (input ``clusters``)."""
    lsh_shape(cfg)
    source = inputs["docs"]
    input_shards(source)
    clusters = inputs.get("clusters")
    work = None
    if clusters is None:
        work = out / ".work"
        dirs = {part: work / part for part in PARTS}
        for part, fn in PARTS.items():
            started = time.time()
            fn(cfg, inputs, dirs, [], log)
            log.info("part %s: %.2fs", part, time.time() - started)
        clusters = dirs["clusters"]
    summary = json.loads((Path(clusters) / "stats.json").read_text())
    summary["clusters_wall_s"] = summary.pop("wall_s", None)
    index = None
    if cfg.remove_eval_overlap:
        from pipeline.core.ngrams import NgramIndex
        from pipeline.core.tasks import task_texts

        index = NgramIndex.from_texts(task_texts(list(cfg.remove_eval_overlap)), n=cfg.eval_ngram)
        log.info("eval-overlap index: %d %d-grams from %s", len(index), cfg.eval_ngram, cfg.remove_eval_overlap)
    stats = remove_all(source, Path(clusters) / "assign", out, cfg.workers, index)
    shutil.copy(Path(clusters) / "examples.jsonl", out / "examples.jsonl")
    if work is not None:
        shutil.rmtree(work)
    return {**stats, **summary}
