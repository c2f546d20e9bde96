"""Toxic and offensive text: the linear classifier of `alt-profanity-check` (a TF-IDF
SVM trained on toxic comments, calibrated to a probability; the model ships in the wheel).

Off by default: on the built-in corpus it flags 53 of 77 Shakespeare plays, 224 of 1,189
Bible chapters and 1 of 200 newsgroup posts at p > 0.5 (24, 33 and 0 at p > 0.8); every
flagged document we read was a false positive (old or religious vocabulary: "God" alone
raises the score). Turn it on for web or forum text, where its training data came from.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.core.errors import StageError


@dataclass
class ToxicityConfig:
    enabled: bool = False
    skip_sources: list[str] = field(default_factory=lambda: ["books/*", "code/*"])
    threshold: float = 0.8    # drop when the classifier's probability of offensive text exceeds it
    max_chars: int = 20_000   # score the start of long documents only


def scores(texts: list[str], max_chars: int) -> list[float]:
    try:
        from profanity_check import predict_prob
    except ImportError as err:
        raise StageError(f"filter.toxicity needs alt-profanity-check ({err}): pip install alt-profanity-check") from None
    if not texts:
        return []
    return [float(p) for p in predict_prob([t[:max_chars] for t in texts])]
