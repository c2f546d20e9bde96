"""The FineWeb rules (Penedo et al. 2024, "The FineWeb Datasets", section 3.3 and appendix),
with the thresholds of FineWeb's released pipeline (datatrove's FineWebQualityFilter).

- fewer than 12% of lines end in terminal punctuation          -> line_punct_thr
- more than 67% of lines are 30 characters or shorter          -> short_line_thr
- more than 1% of characters are in duplicated lines           -> char_duplicates_ratio
- more than 0.3 newlines per word (lists, menus)               -> new_line_ratio
Words are whitespace-separated (datatrove: spaCy tokens), which makes new_line_ratio a
little stricter on punctuation-heavy text.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from pipeline.filter.text import TextView, duplicates

# Sentence-final marks of the major scripts (datatrove lists every Unicode Sentence_Terminal).
TERMINAL = (".", "!", "?", "。", "！", "？", "．", "…", "؟", "۔", "।", "॥", "‼", "⁇", "⁈", "⁉", "።", "፧", "᙮", "։", "｡")


@dataclass
class FineWebConfig:
    enabled: bool = True
    # Plays and verse are short lines by design, code too.
    skip_sources: list[str] = field(default_factory=lambda: ["books/*", "code/*"])
    line_punct_thr: Optional[float] = 0.12
    line_punct_exclude_zero: bool = False
    short_line_thr: Optional[float] = 0.67
    short_line_length: int = 30
    char_duplicates_ratio: Optional[float] = 0.01
    new_line_ratio: Optional[float] = 0.3


def check(v: TextView, c: FineWebConfig) -> Optional[str]:
    lines = v.nonempty_lines
    if not lines:
        return "line_punct_thr"
    if c.line_punct_thr is not None:
        ratio = sum(1 for line in lines if line.endswith(TERMINAL)) / len(lines)
        if ratio < c.line_punct_thr and not (ratio == 0 and c.line_punct_exclude_zero):
            return "line_punct_thr"
    if c.short_line_thr is not None:
        ratio = sum(1 for line in lines if len(line) <= c.short_line_length) / len(lines)
        if ratio > c.short_line_thr:
            return "short_line_thr"
    if c.char_duplicates_ratio is not None:
        chars = len(v.text) - v.text.count("\n")
        if chars and duplicates(lines)[1] / chars > c.char_duplicates_ratio:
            return "char_duplicates_ratio"
    if c.new_line_ratio is not None and v.text.count("\n") / max(len(v.words), 1) > c.new_line_ratio:
        return "new_line_ratio"
    return None
