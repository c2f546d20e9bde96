"""Step 3 (gather): verify candidate pairs, union-find them into clusters, pick each keeper.

Verification (``verify``): ``exact`` re-reads the candidate documents and computes the Jaccard
of their shingle sets; ``estimated`` uses signature agreement; ``none`` accepts every LSH
candidate (what datatrove does). Confirmed pairs and exact groups are joined by union-find.

The keeper of a cluster (``keep``): ``first`` = earliest in input order (shard, row);
``longest`` = most characters, ties to the earliest. Every other member is dropped as
``exact_duplicate`` when its normalized text equals a preferred member's, else as
``near_duplicate``. The cluster id is the keeper's document id.

Writes ``assign/<shard>.parquet`` (row, cluster, size, action for each member of a cluster of
2+, in that shard only: the removal step reads just its own), ``examples.jsonl`` and
``summary.json``. Memory grows with the duplicates, not with the corpus.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.dedup.shingles import shard_shingles

ASSIGN_SCHEMA = pa.schema([("row", pa.int64()), ("cluster", pa.string()), ("size", pa.int64()),
                           ("action", pa.string())])
SIM_BINS = np.round(np.linspace(0, 1, 21), 2)


class UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


class Corpus:
    """Random access to documents by global index: shard ``i`` holds offsets[i]..offsets[i+1]."""

    def __init__(self, source: Path, shards: list[dict]):
        self.source = Path(source)
        self.names = [s["name"] for s in shards]
        self.offsets = np.concatenate([[0], np.cumsum([s["docs"] for s in shards])]).astype(np.int64)

    def by_shard(self, docs) -> dict[int, np.ndarray]:
        docs = np.unique(np.asarray(docs, dtype=np.int64))
        shard = np.searchsorted(self.offsets, docs, side="right") - 1
        return {int(s): docs[shard == s] for s in np.unique(shard)}

    def column(self, docs, name: str) -> dict[int, object]:
        """{global index: value of column ``name``} for the given documents."""
        out = {}
        for s, members in self.by_shard(docs).items():
            path = self.source / self.names[s]
            try:
                values = pq.read_table(path, columns=[name]).column(name).take(members - self.offsets[s]).to_pylist()
            except Exception as err:
                raise RuntimeError(f"dedup clusters: cannot read {name!r} from shard {path}: {err}") from err
            out.update(zip(members.tolist(), values))
        return out


def exact_jaccard(pairs: np.ndarray, corpus: Corpus, ngram: int) -> np.ndarray:
    texts = corpus.column(pairs.ravel(), "text")
    keys = list(texts)
    sh = shard_shingles([texts[k] or "" for k in keys], ngram)
    sets = {k: set(sh.of(i).tolist()) for i, k in enumerate(keys)}
    sims = np.empty(len(pairs))
    for i, (a, b) in enumerate(pairs.tolist()):
        sa, sb = sets[a], sets[b]
        inter = len(sa & sb)
        sims[i] = inter / (len(sa) + len(sb) - inter) if inter else 0.0
    return sims


def estimated_jaccard(pairs: np.ndarray, corpus: Corpus, sig_dir: Path) -> np.ndarray:
    sigs = {}
    for s, members in corpus.by_shard(pairs.ravel()).items():
        sig = np.load(Path(sig_dir) / f"{Path(corpus.names[s]).stem}.npz")["sig"]
        sigs.update(zip(members.tolist(), sig[members - corpus.offsets[s]]))
    return np.array([np.mean(sigs[a] == sigs[b]) for a, b in pairs.tolist()])


def preference(keep: str, doc: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Rank of each node under the keep rule (lower is preferred)."""
    order = np.lexsort((doc, -length)) if keep == "longest" else np.argsort(doc, kind="stable")
    rank = np.empty(len(doc), dtype=np.int64)
    rank[order] = np.arange(len(doc))
    return rank


def build_clusters(cfg, source: Path, buckets: Path, sig_dir: Path, out: Path, log) -> dict:
    corpus = Corpus(source, json.loads((buckets / "shards.json").read_text()))
    pairs = np.load(buckets / "pairs.npy")
    nodes = np.load(buckets / "nodes.npz")
    doc, length, group = nodes["doc"], nodes["length"], nodes["exact_group"]
    if cfg.verify == "exact":
        sims = exact_jaccard(pairs, corpus, cfg.ngram)
    elif cfg.verify == "estimated":
        sims = estimated_jaccard(pairs, corpus, sig_dir)
    else:
        sims = np.ones(len(pairs))
    confirmed = pairs[sims >= cfg.threshold]
    pos = {d: i for i, d in enumerate(doc.tolist())}
    uf = UnionFind(len(doc))
    for i, g in enumerate(group.tolist()):
        if g >= 0:
            uf.union(i, pos[g])
    for a, b in confirmed.tolist():
        uf.union(pos[a], pos[b])
    root = np.array([uf.find(i) for i in range(len(doc))], dtype=np.int64)
    size = np.bincount(root, minlength=len(doc))[root]
    rank = preference(cfg.keep, doc, length)
    member = np.flatnonzero(size >= 2)
    keeper_of_root, best_in_group = {}, {}
    for i in member[np.argsort(rank[member])].tolist():  # preferred first
        keeper_of_root.setdefault(int(root[i]), i)
        if group[i] >= 0:
            best_in_group.setdefault(int(group[i]), i)
    action = {}
    for i in member.tolist():
        if keeper_of_root[int(root[i])] == i:
            action[i] = "keep"
        elif group[i] >= 0 and best_in_group[int(group[i])] != i:
            action[i] = "exact_duplicate"
        else:
            action[i] = "near_duplicate"
    ids = corpus.column(doc[member], "id")
    cluster_id = {i: ids[int(doc[keeper_of_root[int(root[i])]])] for i in member.tolist()}
    _write_assignments(out, corpus, doc, member, cluster_id, size, action)
    _write_examples(out, corpus, doc, root, member, action, cfg.sample_size)
    counts = Counter(action.values())
    sim_hist, _ = np.histogram(sims, bins=SIM_BINS)
    summary = {
        "clusters": len(keeper_of_root),
        "docs_in_clusters": int(len(member)),
        "exact_duplicates": counts["exact_duplicate"],
        "near_duplicates": counts["near_duplicate"],
        "verified_pairs": int(len(pairs)),
        "confirmed_pairs": int(len(confirmed)),
        "cluster_sizes": {str(k): v for k, v in sorted(Counter(Counter(root[member].tolist()).values()).items())},
        "pair_similarity_histogram": {f"{lo:.2f}": int(c) for lo, c in zip(SIM_BINS[:-1], sim_hist)},
    }
    log.info("clusters: %s", {k: v for k, v in summary.items() if not isinstance(v, dict)})
    return summary


def _write_assignments(out: Path, corpus: Corpus, doc, member, cluster_id, size, action) -> None:
    (out / "assign").mkdir(parents=True, exist_ok=True)
    by_shard = defaultdict(list)
    for i in member.tolist():
        g = int(doc[i])
        s = int(np.searchsorted(corpus.offsets, g, side="right") - 1)
        by_shard[s].append({"row": g - int(corpus.offsets[s]), "cluster": cluster_id[i],
                            "size": int(size[i]), "action": action[i]})
    for s, rows in by_shard.items():
        pq.write_table(pa.Table.from_pylist(rows, schema=ASSIGN_SCHEMA),
                       out / "assign" / corpus.names[s], compression="zstd")


def _write_examples(out: Path, corpus: Corpus, doc, root, member, action, n: int) -> None:
    """The largest clusters with near duplicates, then the largest exact-only ones: n of each."""
    clusters = defaultdict(list)
    for i in member.tolist():
        clusters[int(root[i])].append(i)
    ranked = sorted(clusters.values(), key=lambda c: (-len(c), int(doc[c[0]])))
    near = [c for c in ranked if any(action[i] == "near_duplicate" for i in c)][:n]
    exact = [c for c in ranked if all(action[i] != "near_duplicate" for i in c)][:n]
    # The keeper first, then the others in input order; at most 10 members shown per cluster.
    chosen = [sorted(c, key=lambda i: (action[i] != "keep", int(doc[i])))[:10] for c in near + exact]
    wanted = [int(doc[i]) for c in chosen for i in c]
    texts, ids, sources = (corpus.column(wanted, col) for col in ("text", "id", "source"))
    with open(out / "examples.jsonl", "w", encoding="utf-8") as f:
        for members, full in zip(chosen, near + exact):
            f.write(json.dumps({
                "size": len(full),
                "members": [{"id": ids[int(doc[i])], "source": sources[int(doc[i])], "action": action[i],
                             "text": (texts[int(doc[i])] or "")[:400]} for i in members],
            }, ensure_ascii=False) + "\n")
