"""filter vs datatrove 0.10: Gopher quality + Gopher repetition + C4 on the same documents.

    python -m benchmarks.filter [--docs 20000]

Both run on one core, each in its own process (a big shared heap slowed datatrove 2x),
on ~20k paragraph-sized documents cut from the built-in corpus (benchmarks/paragraphs.py).
Only the rule loop is timed (no I/O, no imports). Target: ours >= 5x datatrove's docs/s.
Both keep the same documents whatever the order (repetition sees the text before C4's line
removal on both sides); the reason named for a document failing several rules can differ.
datatrove needs `pip install -e .[bench]` (datatrove[processing] and spaCy: its English
word tokenizer is spaCy's, which the processing extra does not install).

Decisions differ where the rules are defined differently (see pipeline/filter/gopher.py):
whitespace words instead of spaCy tokens, mostly the "80% of words contain a letter" rule.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CORPUS = REPO / "results" / "benchmarks" / "paragraphs.jsonl"


def _ours(docs: list[dict]) -> tuple[float, list]:
    from pipeline.filter import Config
    from pipeline.filter.apply import judge

    cfg = Config()
    cfg.language.enabled = cfg.fineweb.enabled = cfg.toxicity.enabled = False
    cfg.gopher_quality.skip_sources = cfg.gopher_repetition.skip_sources = cfg.c4.skip_sources = []
    cfg.c4.filter_no_terminal_punct = True  # the paper's rule and datatrove's default (ours is off, as FineWeb)
    rows = [{"id": d["id"], "text": d["text"], "source": d["source"], "meta": "{}"} for d in docs]
    start = time.perf_counter()
    reasons = [judge(r, cfg)[1] for r in rows]
    return time.perf_counter() - start, reasons


def _datatrove(docs: list[dict]) -> tuple[float, list]:
    from datatrove.data import Document
    from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter

    chain = [("gopher_quality", GopherQualityFilter()), ("gopher_repetition", GopherRepetitionFilter()),
             ("c4", C4QualityFilter())]
    documents = [Document(text=d["text"], id=d["id"]) for d in docs]
    chain[0][1].filter(Document(text="warm up the spaCy tokenizer " * 20, id="w"))
    start = time.perf_counter()
    reasons = []
    for doc in documents:
        reason = None
        for name, f in chain:
            out = f.filter(doc)
            if out is not True and not (isinstance(out, tuple) and out[0]):
                reason = f"{name}.{out[1] if isinstance(out, tuple) else 'dropped'}"
                break
        reasons.append(reason)
    return time.perf_counter() - start, reasons


def _worker(tool: str, corpus: Path, n: int, out: Path) -> None:
    with open(corpus, encoding="utf-8") as f:
        docs = [json.loads(line) for _, line in zip(range(n), f)]
    seconds, reasons = (_ours if tool == "ours" else _datatrove)(docs)
    out.write_text(json.dumps({"seconds": seconds, "reasons": reasons, "sources": [d["source"] for d in docs]}))


def _run(tool: str, corpus: Path, n: int) -> dict:
    from benchmarks.isolated import run_worker

    return run_worker(__file__, tool, corpus, n)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=20_000)
    p.add_argument("--corpus", type=Path, default=CORPUS)
    p.add_argument("--worker", choices=["ours", "datatrove"])
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    if args.worker:
        return _worker(args.worker, args.corpus, args.docs, args.out)
    from benchmarks import paragraphs

    docs = paragraphs.cached(args.corpus)[: args.docs]
    mb = sum(len(d["text"].encode()) for d in docs) / 1e6
    print(f"corpus: {len(docs)} documents, {mb:.1f} MB, sources {dict(Counter(d['source'] for d in docs))}")
    ours = _run("ours", args.corpus, len(docs))
    theirs = _run("datatrove", args.corpus, len(docs))
    n = len(docs)
    print(f"{'tool':<12}{'docs/s':>10}{'MB/s':>8}{'kept':>8}")
    for name, r in (("lmdag", ours), ("datatrove", theirs)):
        kept = sum(x is None for x in r["reasons"])
        print(f"{name:<12}{n / r['seconds']:>10.0f}{mb / r['seconds']:>8.2f}{kept:>8}")
    ratio = theirs["seconds"] / ours["seconds"]
    print(f"speed ratio (lmdag docs/s / datatrove docs/s): {ratio:.1f}x  (target >= 5x: {'met' if ratio >= 5 else 'NOT met'})")
    same = sum((a is None) == (b is None) for a, b in zip(ours["reasons"], theirs["reasons"]))
    print(f"same keep/drop decision: {same}/{n} = {same / n:.1%}")
    differ = Counter(
        f"lmdag {a or 'keep'} / datatrove {b or 'keep'}"
        for a, b in zip(ours["reasons"], theirs["reasons"]) if (a is None) != (b is None)
    )
    for k, v in differ.most_common(6):
        print(f"  {v:6d}  {k}")


if __name__ == "__main__":
    main()
