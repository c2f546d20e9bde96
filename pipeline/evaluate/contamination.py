"""Train/test overlap per eval set (GPT-3's 13-gram decontamination check, appendix C)."""
from __future__ import annotations

from pipeline.core.ngrams import NgramIndex


def report(index: NgramIndex, texts: list[str]) -> dict:
    """Per eval set: examples checked, dirty examples (any shared n-gram), share of grams shared."""
    checked = dirty = grams = hits = 0
    for t in texts:
        g, h = index.overlap(t)
        if g:
            checked += 1
            dirty += h > 0
            grams += g
            hits += h
    return {"examples": len(texts), "checked": checked, "dirty": dirty,
            "dirty_fraction": dirty / checked if checked else 0.0,
            "ngram_overlap": hits / grams if grams else 0.0, "n": index.n}
