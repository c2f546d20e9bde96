"""A deterministic dedup benchmark corpus with exact all-pairs Jaccard ground truth.

    python -m benchmarks.corpus          build (once; cached) and print what it holds

The corpus is real English from the built-in corpus (Wikipedia, news, newsgroups, books —
no code) cut into paragraph-sized documents (~20k, ~20 MB), plus planted copies:

    exact        verbatim copies
    reformatted  copies that differ only in case and whitespace (equal once normalized)
    near         copies with 1-5 random word edits (substitute, delete or insert a word)

Planted copies are shuffled among the originals, so they land in other shards. The ground
truth is every pair of documents whose word 5-gram sets have exact Jaccard >= 0.7 (the
benchmark scores at 0.8), found by a prefix-filter all-pairs join (Bayardo et al., "Scaling
up all pairs similarity search", WWW 2007): two sets with J >= t must share a token among
the first |x| - ceil(t|x|) + 1 tokens of each in one global order, so the join is exact, not
LSH-approximated. Shingles are exact word tuples, not hashes, so no collision blurs it.

Shingling, shared by every tool being scored: lowercase, words = runs of \\w characters,
5-grams of consecutive words; a document with fewer than 5 words is one shingle of them all.

Other benchmarks may import it: ``corpus_dir()``, ``truth()``, ``duplicate_docs()``, ``score()``.
"""
from __future__ import annotations

import json
import math
import random
import re
import time
from pathlib import Path

import numpy as np

VERSION = "1"
SEED = 20240603
NGRAM = 5
TRUTH_MIN_JACCARD = 0.7
SHARD_DOCS = 2000
TARGET_DOCS = 20_000
# Paragraph packing: real paragraphs are joined until a document has MIN_CHARS; longer ones
# are cut at sentence ends near TARGET_CHARS, so documents are paragraph-sized (~1 KB).
MIN_CHARS, TARGET_CHARS, MAX_CHARS = 700, 1000, 2000
PLANT_EXACT, PLANT_REFORMATTED, PLANT_NEAR = 700, 300, 2000
PROSE_SOURCES = ("wikipedia/enwiki", "web/newsgroups", "news/lee", "books/shakespeare",
                 "books/milton", "books/bible_kjv")
WORD = re.compile(r"\w+")


def cache_root() -> Path:
    from pipeline.collect.builtin import cache_dir

    return cache_dir().parent / "bench" / f"dedup-corpus-v{VERSION}"


def corpus_dir() -> Path:
    """The corpus as a directory of document shards (built on first use)."""
    root = cache_root()
    if not (root / "docs" / "stats.json").is_file():
        build(root)
    return root / "docs"


# ---------------------------------------------------------------- documents

def _pieces(paragraph: str) -> list[str]:
    """A paragraph longer than MAX_CHARS cut at sentence ends near TARGET_CHARS."""
    if len(paragraph) <= MAX_CHARS:
        return [paragraph]
    out, start = [], 0
    while len(paragraph) - start > MAX_CHARS:
        cut = paragraph.find(". ", start + TARGET_CHARS)
        if cut < 0 or cut - start > MAX_CHARS:
            cut = paragraph.find(" ", start + TARGET_CHARS)
        if cut < 0:
            break
        out.append(paragraph[start:cut + 1].strip())
        start = cut + 1
    out.append(paragraph[start:].strip())
    return out


def paragraph_docs(text: str) -> list[str]:
    """Consecutive paragraphs packed into documents of MIN_CHARS..~MAX_CHARS characters."""
    docs, buf = [], []
    for para in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        para = para.strip("\n")
        if not para.strip():
            continue
        for piece in _pieces(para):
            buf.append(piece)
            if sum(map(len, buf)) >= MIN_CHARS:
                docs.append("\n\n".join(buf))
                buf = []
    if buf and len(WORD.findall(" ".join(buf))) >= 40:
        docs.append("\n\n".join(buf))
    return docs


def _base_documents() -> list[tuple[str, str]]:
    from pipeline.collect import builtin

    out = []
    for name in PROSE_SOURCES:
        _, read = builtin.SOURCES[name]
        for _, text, _ in read():
            out += [(name, d) for d in paragraph_docs(text)]
    return out


def _edit(text: str, k: int, vocab: list[str], rng: random.Random) -> str:
    """``k`` random word edits (substitute, delete, insert) on whitespace-separated words."""
    words = text.split(" ")
    for _ in range(k):
        op, i = rng.choice(("substitute", "delete", "insert")), rng.randrange(len(words))
        if op == "substitute":
            words[i] = rng.choice(vocab)
        elif op == "delete" and len(words) > 1:
            del words[i]
        else:
            words.insert(i, rng.choice(vocab))
    return " ".join(words)


def _reformat(text: str, rng: random.Random) -> str:
    text = re.sub(r"\s+", lambda m: rng.choice([" ", "  ", "\n", " \n "]), text)
    return text.upper() if rng.random() < 0.5 else text.lower()


def build(root: Path) -> None:
    from pipeline.core.docs import ShardWriter, doc

    started = time.time()
    rng = random.Random(SEED)
    base = _base_documents()
    n_base = TARGET_DOCS - PLANT_EXACT - PLANT_REFORMATTED - PLANT_NEAR
    base = [base[i] for i in sorted(rng.sample(range(len(base)), min(n_base, len(base))))]
    vocab = sorted({w for _, t in base[:2000] for w in t.split() if w.isalpha()})
    rows = [(src, text, {"plant": "original"}) for src, text in base]
    for kind, count in (("exact", PLANT_EXACT), ("reformatted", PLANT_REFORMATTED), ("near", PLANT_NEAR)):
        for i in rng.sample(range(len(base)), count):
            src, text = base[i]
            meta = {"plant": kind, "of": i}
            if kind == "reformatted":
                text = _reformat(text, rng)
            elif kind == "near":
                meta["edits"] = rng.randint(1, 5)
                text = _edit(text, meta["edits"], vocab, rng)
            rows.append((src, text, meta))
    order = list(range(len(rows)))
    rng.shuffle(order)
    new_index = {old: new for new, old in enumerate(order)}
    writer = ShardWriter(root / "docs", SHARD_DOCS)
    for new, old in enumerate(order):
        src, text, meta = rows[old]
        if "of" in meta:  # point at the original's id in the shuffled corpus
            meta["of"] = f"doc-{new_index[meta['of']]:06d}"
        writer.add(doc(f"doc-{new:06d}", text, src, meta))
    shards = writer.close()
    total_bytes = sum(len(r[1].encode()) for r in rows)
    (root / "docs" / "stats.json").write_text(json.dumps(
        {"docs_kept": len(rows), "bytes_kept": total_bytes, "shards": shards, "seed": SEED}, indent=1))
    print(f"benchmark corpus: {len(rows):,} documents, {total_bytes / 1e6:.1f} MB, {shards} shards "
          f"in {root / 'docs'} ({time.time() - started:.0f}s)")


# ---------------------------------------------------------------- ground truth

def texts() -> list[str]:
    import pyarrow.parquet as pq

    from pipeline.core.docs import shard_paths

    return [t for p in shard_paths(corpus_dir()) for t in pq.read_table(p, columns=["text"]).column("text").to_pylist()]


def doc_ids() -> list[str]:
    import pyarrow.parquet as pq

    from pipeline.core.docs import shard_paths

    return [t for p in shard_paths(corpus_dir()) for t in pq.read_table(p, columns=["id"]).column("id").to_pylist()]


def shingle_sets(docs: list[str]) -> list[np.ndarray]:
    """Per document, the sorted ids of its distinct word 5-grams (ids are exact, not hashes)."""
    vocab: dict[str, int] = {}
    words = [np.array([vocab.setdefault(w, len(vocab)) for w in WORD.findall(t.lower())], dtype=np.int64)
             for t in docs]
    grams, owner = [], []
    for i, w in enumerate(words):
        if len(w) >= NGRAM:
            g = np.lib.stride_tricks.sliding_window_view(w, NGRAM)
        else:  # a short document is one shingle of all its words, padded
            g = np.full((1, NGRAM), -1, dtype=np.int64)
            g[0, :len(w)] = w
        grams.append(g)
        owner.append(np.full(len(g), i, dtype=np.int64))
    grams_all = np.ascontiguousarray(np.concatenate(grams))
    owner_all = np.concatenate(owner)
    rows = grams_all.view(np.dtype((np.void, grams_all.dtype.itemsize * NGRAM))).ravel()
    _, ids = np.unique(rows, return_inverse=True)
    ids = ids.ravel()
    bounds = np.searchsorted(owner_all, np.arange(len(docs) + 1))
    return [np.unique(ids[bounds[i]:bounds[i + 1]]) for i in range(len(docs))]


def all_pairs(sets: list[np.ndarray], threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (i < j) with Jaccard >= threshold: prefix-filter candidates, exact verification."""
    n_tokens = max(int(s.max()) for s in sets if len(s)) + 1
    df = np.bincount(np.concatenate(sets), minlength=n_tokens)
    rank = np.empty(n_tokens, dtype=np.int64)
    rank[np.lexsort((np.arange(n_tokens), df))] = np.arange(n_tokens)  # rarest token first
    index: dict[int, list[int]] = {}
    pairs, sims = [], []
    sizes = np.array([len(s) for s in sets])
    as_sets: dict[int, set] = {}
    # Visit documents by size so each candidate pair is seen from its larger member only once.
    for i in np.argsort(sizes, kind="stable"):
        s = sets[i]
        if not len(s):
            continue
        ordered = s[np.argsort(rank[s])]
        prefix = ordered[: len(s) - math.ceil(threshold * len(s)) + 1]
        candidates = set()
        for tok in prefix.tolist():
            bucket = index.setdefault(tok, [])
            candidates.update(bucket)
            bucket.append(int(i))
        for j in candidates:
            if sizes[j] < threshold * sizes[i]:  # size filter: J <= |small| / |large|
                continue
            a = as_sets.setdefault(int(i), set(s.tolist()))
            b = as_sets.setdefault(j, set(sets[j].tolist()))
            inter = len(a & b)
            jac = inter / (len(a) + len(b) - inter)
            if jac >= threshold:
                pairs.append((min(i, j), max(i, j)))
                sims.append(jac)
    order = np.lexsort(np.array(pairs).T[::-1]) if pairs else []
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)[order], np.array(sims, dtype=np.float64)[order]


def truth() -> tuple[np.ndarray, np.ndarray]:
    """(pairs (i, j) of corpus row indices, their exact Jaccard) for every pair with J >= 0.7."""
    path = cache_root() / "truth.npz"
    if not path.is_file():
        started = time.time()
        pairs, sims = all_pairs(shingle_sets(texts()), TRUTH_MIN_JACCARD)
        np.savez(path, pairs=pairs, jaccard=sims)
        print(f"ground truth: {len(pairs):,} pairs with Jaccard >= {TRUTH_MIN_JACCARD} ({time.time() - started:.0f}s)")
    data = np.load(path)
    return data["pairs"], data["jaccard"]


def duplicate_docs(threshold: float = 0.8) -> set[int]:
    """Rows of documents that have at least one other document with Jaccard >= threshold."""
    pairs, sims = truth()
    return set(pairs[sims >= threshold].ravel().tolist())


def score(clustered: set[int], removed: set[int] | None = None, threshold: float = 0.8) -> dict:
    """Duplicate-document precision and recall.

    ``clustered``: rows a tool placed in a cluster of two or more (kept ones included).
    A document is a true duplicate when some other document has Jaccard >= threshold with it.
    ``removed`` (optional) adds the removal count and how many removals had no true partner.
    """
    true = duplicate_docs(threshold)
    hit = len(clustered & true)
    out = {
        "flagged": len(clustered),
        "true_duplicates": len(true),
        "precision": hit / len(clustered) if clustered else 1.0,
        "recall": hit / len(true) if true else 1.0,
    }
    if removed is not None:
        out["removed"] = len(removed)
        out["removed_without_partner"] = len(removed - true)
    return out


if __name__ == "__main__":
    d = corpus_dir()
    pairs, sims = truth()
    print(f"{d}: {json.loads((d / 'stats.json').read_text())}")
    for t in (0.7, 0.8, 0.9, 1.0):
        print(f"  pairs with Jaccard >= {t}: {int((sims >= t).sum()):,}; "
              f"documents with a partner: {len(duplicate_docs(t)):,}")
