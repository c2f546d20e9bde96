"""Dedup speed and accuracy, side by side: lmdag's dedup stage vs datatrove 0.10's MinHash pipeline
(and datasketch's MinHash + MinHashLSH) on one core, scored against exact all-pairs Jaccard.

    python benchmarks/dedup.py            (needs the bench extra: pip install -e .[bench])

Input: benchmarks/corpus.py (~20k paragraph documents, ~20 MB of real English with planted
exact, reformatted and 1-5-word-edit copies; cached). Each tool runs in its own process
(a large shared heap slowed datatrove down), with one worker, from the same Parquet shards:

    lmdag       the whole stage (signatures, buckets, clusters, removal), written as shards
    datatrove   MinhashDedupSignature -> Buckets -> Cluster -> Filter, its defaults (5-grams,
                14 bands x 8 rows, spaCy word tokenizer), kept and removed docs written as Parquet
    datasketch  MinHash(128) per document + MinHashLSH(threshold 0.8) + union-find, no output
                written (a lower bound of a pipeline built on it)

Accuracy: a document is a true duplicate when another document has exact Jaccard >= 0.8 with
it (word 5-gram sets); a tool flags the documents it put in a cluster of two or more.
Time: wall and CPU seconds (user + system, all threads) of the dedup work, imports excluded.
The CPU ratio is the steadier one on a shared machine.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

THRESHOLD = 0.8


def _cpu() -> float:
    r, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def run_lmdag(corpus: Path, work: Path) -> dict:
    import dataclasses

    import pyarrow.parquet as pq

    from pipeline.dedup import Config
    from pipeline.core.docs import iter_docs
    from pipeline.stage import execute

    subtree = dataclasses.asdict(Config(threshold=THRESHOLD, workers=1))
    wall, cpu = time.perf_counter(), _cpu()
    stats = execute("dedup", subtree, {"docs": corpus}, work / "out")
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    dropped = [r for p in sorted((work / "out/dropped").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    clustered = [r["id"] for r in [*iter_docs(work / "out"), *dropped] if json.loads(r["meta"])["dedup_cluster_size"] > 1]
    return {"wall_s": wall, "cpu_s": cpu, "clustered_ids": clustered, "removed_ids": [r["id"] for r in dropped],
            "lsh": stats["lsh"]}


def run_datatrove(corpus: Path, work: Path) -> dict:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import ParquetWriter

    files = sorted(corpus.glob("shard-*.parquet"))
    config = MinhashConfig()  # its defaults: 5-grams, 14 buckets x 8 hashes, xxhash 64

    def reader():
        return ParquetReader(str(corpus), glob_pattern="shard-*.parquet", text_key="text", id_key="id")

    common = {"workers": 1, "skip_completed": False}
    # The bucket step asserts tasks % num_buckets == 0: 14 tasks, run one at a time.
    steps = [
        LocalPipelineExecutor([reader(), MinhashDedupSignature(str(work / "sigs"), config=config)],
                              tasks=len(files), logging_dir=str(work / "logs/sigs"), **common),
        LocalPipelineExecutor([MinhashDedupBuckets(str(work / "sigs"), str(work / "buckets"), config=config)],
                              tasks=config.num_buckets, logging_dir=str(work / "logs/buckets"), **common),
        LocalPipelineExecutor([MinhashDedupCluster(str(work / "buckets"), str(work / "remove"), config=config,
                                                   save_cluster_id=True)],
                              tasks=1, logging_dir=str(work / "logs/cluster"), **common),
        LocalPipelineExecutor([reader(),
                               MinhashDedupFilter(str(work / "remove"), load_cluster_ids=True,
                                                  exclusion_writer=ParquetWriter(str(work / "removed"))),
                               ParquetWriter(str(work / "kept"))],
                              tasks=len(files), logging_dir=str(work / "logs/filter"), **common),
    ]
    wall, cpu = time.perf_counter(), _cpu()
    for step in steps:
        step.run()
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    import pyarrow.parquet as pq

    clustered, removed = [], []
    for part in ("kept", "removed"):
        for path in sorted((work / part).glob("*.parquet")):
            for row in pq.read_table(path, columns=["id", "metadata"]).to_pylist():
                if row["metadata"].get("minhash_cluster_id", -1) != -1:
                    clustered.append(row["id"])
                if part == "removed":
                    removed.append(row["id"])
    return {"wall_s": wall, "cpu_s": cpu, "clustered_ids": clustered, "removed_ids": removed}


def run_datasketch(corpus: Path, work: Path) -> dict:
    import pyarrow.parquet as pq
    from datasketch import LeanMinHash, MinHash, MinHashLSH

    from pipeline.dedup.clusters import UnionFind
    from pipeline.dedup.shingles import words

    wall, cpu = time.perf_counter(), _cpu()
    ids, texts = [], []
    for p in sorted(corpus.glob("shard-*.parquet")):
        t = pq.read_table(p, columns=["id", "text"])
        ids += t.column("id").to_pylist()
        texts += t.column("text").to_pylist()
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=128)
    sigs = []
    for i, text in enumerate(texts):
        w = words(text)
        grams = {" ".join(w[k:k + 5]).encode() for k in range(max(1, len(w) - 4))}
        m = MinHash(num_perm=128, seed=1)
        m.update_batch(list(grams))
        sigs.append(LeanMinHash(m))
        lsh.insert(i, sigs[-1])
    uf = UnionFind(len(texts))
    for i, m in enumerate(sigs):
        for j in lsh.query(m):
            uf.union(i, j)
    roots = [uf.find(i) for i in range(len(texts))]
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    from collections import Counter

    size = Counter(roots)
    clustered = [ids[i] for i, r in enumerate(roots) if size[r] > 1]
    removed = [ids[i] for i, r in enumerate(roots) if size[r] > 1 and r != i]
    return {"wall_s": wall, "cpu_s": cpu, "clustered_ids": clustered, "removed_ids": removed}


WORKERS = {"lmdag": run_lmdag, "datatrove": run_datatrove, "datasketch": run_datasketch}


def _in_own_process(tool: str, corpus: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"bench-dedup-{tool}-") as tmp:
        result = Path(tmp) / "result.json"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "TQDM_DISABLE": "1"}
        proc = subprocess.run([sys.executable, __file__, "--worker", tool, str(corpus), tmp, str(result)],
                              env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{tool} failed:\n{proc.stderr[-3000:]}")
        return json.loads(result.read_text())


def tokenizer_agreement(texts: list[str]) -> int:
    """Documents whose words differ between lmdag's Arrow tokenizer and the ground truth's re."""
    from pipeline.dedup.shingles import shard_words, words
    import xxhash

    h, off = shard_words(texts)
    return sum(
        h[off[i]:off[i + 1]].tolist() != [xxhash.xxh3_64_intdigest(w.encode()) for w in words(t)] for i, t in enumerate(texts)
    )


def main() -> None:
    from benchmarks import corpus

    directory = corpus.corpus_dir()
    corpus.truth()
    ids = corpus.doc_ids()
    row = {d: i for i, d in enumerate(ids)}
    n_docs = len(ids)
    mb = json.loads((directory / "stats.json").read_text())["bytes_kept"] / 1e6
    print(f"corpus: {n_docs:,} documents, {mb:.1f} MB ({directory}); "
          f"tokenizer disagreements with the ground truth: {tokenizer_agreement(corpus.texts())}")
    results = {}
    for tool in WORKERS:
        try:
            results[tool] = _in_own_process(tool, directory)
        except (RuntimeError, ImportError) as err:
            print(f"{tool}: skipped ({str(err).strip().splitlines()[-1]})")
    header = f"{'tool':<11} {'wall s':>7} {'CPU s':>7} {'docs/s':>8} {'docs/CPU s':>10} {'flagged':>8} " \
             f"{'precision':>9} {'recall':>7} {'removed':>8} {'removed, no partner':>19}"
    print(f"\nduplicate documents: exact Jaccard >= {THRESHOLD} with another document "
          f"({len(corpus.duplicate_docs(THRESHOLD)):,} of {n_docs:,})\n{header}")
    for tool, r in results.items():
        s = corpus.score({row[i] for i in r["clustered_ids"]}, {row[i] for i in r["removed_ids"]}, THRESHOLD)
        r.update(s)
        print(f"{tool:<11} {r['wall_s']:>7.1f} {r['cpu_s']:>7.1f} {n_docs / r['wall_s']:>8.0f} "
              f"{n_docs / r['cpu_s']:>10.0f} {s['flagged']:>8,} {s['precision']:>9.3f} {s['recall']:>7.3f} "
              f"{s['removed']:>8,} {s['removed_without_partner']:>19,}")
    if "lmdag" in results:
        print(f"\nlmdag settings: {results['lmdag']['lsh']}")
        for peer in ("datatrove", "datasketch"):
            if peer in results:
                a, b = results["lmdag"], results[peer]
                print(f"lmdag / {peer}: {b['wall_s'] / a['wall_s']:.1f}x docs/s (wall), "
                      f"{b['cpu_s'] / a['cpu_s']:.1f}x docs per CPU second")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        tool, corpus_dir, work, out = sys.argv[2:6]
        import pyarrow

        pyarrow.set_cpu_count(1)
        pyarrow.set_io_thread_count(1)
        Path(out).write_text(json.dumps(WORKERS[tool](Path(corpus_dir), Path(work))))
    else:
        main()
