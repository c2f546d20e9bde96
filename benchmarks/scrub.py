"""scrub vs datatrove 0.10's PIIFormatter: speed on the same documents, accuracy on a labelled set.

    python -m benchmarks.scrub [--docs 20000] [--labelled 2000]

Speed: ~20k paragraph-sized documents cut from the built-in corpus (benchmarks/paragraphs.py),
each tool on one core in its own process, only the replacement loop timed. datatrove's
PIIFormatter replaces e-mails and IPv4 addresses; ours covers every type of pipeline.scrub
(e-mail, phone, card, IBAN, IPv4/IPv6, US SSN, secrets). Target: ours >= datatrove's docs/s.
Accuracy: the seeded labelled set of benchmarks/pii_testset.py; targets: recall >= 0.99
and decoys altered <= 1%.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CORPUS = REPO / "results" / "benchmarks" / "paragraphs.jsonl"


def _worker(tool: str, corpus: Path, n: int, out: Path) -> None:
    with open(corpus, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for _, line in zip(range(n), f)]
    if tool == "ours":
        from pipeline.scrub import Config, scrub_text

        cfg = Config()
        fn = lambda t: scrub_text(t, cfg)[0]  # noqa: E731
    else:
        from datatrove.pipeline.formatters import PIIFormatter

        fn = PIIFormatter().format
    start = time.perf_counter()
    changed = sum(fn(t) != t for t in texts)
    out.write_text(json.dumps({"seconds": time.perf_counter() - start, "changed": changed}))


def _run(tool: str, corpus: Path, n: int) -> dict:
    from benchmarks.isolated import run_worker

    return run_worker(__file__, tool, corpus, n)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=20_000)
    p.add_argument("--labelled", type=int, default=2000)
    p.add_argument("--corpus", type=Path, default=CORPUS)
    p.add_argument("--worker", choices=["ours", "datatrove"])
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    if args.worker:
        return _worker(args.worker, args.corpus, args.docs, args.out)
    from benchmarks import paragraphs, pii_testset

    docs = paragraphs.cached(args.corpus)[: args.docs]
    n, mb = len(docs), sum(len(d["text"].encode()) for d in docs) / 1e6
    print(f"speed corpus: {n} documents, {mb:.1f} MB (built-in corpus in paragraphs)")
    ours, theirs = _run("ours", args.corpus, n), _run("datatrove", args.corpus, n)
    print(f"{'tool':<24}{'docs/s':>10}{'MB/s':>8}{'docs changed':>14}")
    for name, r in (("lmdag scrub (all types)", ours), ("datatrove PIIFormatter", theirs)):
        print(f"{name:<24}{n / r['seconds']:>10.0f}{mb / r['seconds']:>8.2f}{r['changed']:>14}")
    ratio = theirs["seconds"] / ours["seconds"]
    print(f"speed ratio (lmdag docs/s / datatrove docs/s): {ratio:.2f}x  (target >= 1x: {'met' if ratio >= 1 else 'NOT met'})")
    labelled = pii_testset.generate(args.labelled)
    result = pii_testset.score(labelled, pii_testset.ours())
    print(f"\nlabelled set: {len(labelled)} documents, {sum(len(d.spans) for d in labelled)} PII spans, "
          f"{result['decoys']} decoys (seed {pii_testset.SEED})")
    print(pii_testset.table(result))
    ok = result["recall"] >= 0.99 and result["decoy_fp_rate"] <= 0.01
    print(f"targets recall >= 0.99 and decoys altered <= 1%: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
