"""Personal-data detection and replacement, shared by the scrub stage (which applies it to
every document) and the report (which shows text from the steps before scrub as scrub leaves
it). detect.py finds typed spans, replace.py rewrites them."""
from __future__ import annotations

from pipeline.core.pii.detect import KINDS, Span, find
from pipeline.core.pii.replace import replace

DEFAULT_PHONE_REGIONS = ("US", "GB")

__all__ = ["DEFAULT_PHONE_REGIONS", "KINDS", "Span", "find", "replace", "redacted"]


def redacted(text: str) -> str:
    """``text`` with every kind of personal data replaced by its typed placeholder (<EMAIL>, ...)."""
    return replace(text, find(text, frozenset(KINDS), DEFAULT_PHONE_REGIONS), "placeholder")
