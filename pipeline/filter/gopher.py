"""Gopher quality and repetition rules (Rae et al. 2021, section A.1.1 and table A1).

Thresholds are the paper's. Where this differs from datatrove 0.10 and why:
- Words are whitespace-separated, as in the paper. datatrove splits with spaCy, which makes
  every punctuation mark a word and so drops 85% of the built-in newsgroup posts under
  "80% of words contain a letter".
- Mean word length counts letters and digits of a word, not the punctuation stuck to it
  (with whitespace words "end." would otherwise count 4).
- Stop words are matched on word boundaries, so "the," counts (a spaCy token "the" does).
- The "most frequent n-gram" rules need an n-gram that occurs at least twice. datatrove
  counts the first n-gram of a text without any repeat, so a short post whose first
  "word" is a long header (a Usenet Path: line) fails "top 4-gram > 16%" for no repetition.
Everything else (the order of the checks, the n-gram character counts, the greedy skip in
the duplicated n-gram count) follows datatrove so the two agree document by document.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Optional

import numpy as np

from pipeline.filter.text import LINE_SPLIT, PARAGRAPH_SPLIT, TextView, duplicates

STOP_WORDS = ["the", "be", "to", "of", "and", "that", "have", "with"]


@dataclass
class GopherQualityConfig:
    enabled: bool = True
    # Sources (fnmatch globs) the rule leaves alone: code is not prose.
    skip_sources: list[str] = field(default_factory=lambda: ["code/*"])
    min_doc_words: Optional[int] = 50          # paper: 50 to 100,000 words
    max_doc_words: Optional[int] = 100_000
    min_avg_word_length: Optional[float] = 3.0  # paper: mean word length 3 to 10 characters
    max_avg_word_length: Optional[float] = 10.0
    max_symbol_word_ratio: Optional[float] = 0.1     # '#' or '...' per word
    max_bullet_lines_ratio: Optional[float] = 0.9    # lines starting with a bullet
    max_ellipsis_lines_ratio: Optional[float] = 0.3  # lines ending with an ellipsis
    min_alpha_words_ratio: Optional[float] = 0.8     # words containing a letter
    min_stop_words: Optional[int] = 2                # of the paper's eight
    stop_words: list[str] = field(default_factory=lambda: list(STOP_WORDS))


@dataclass
class GopherRepetitionConfig:
    enabled: bool = True
    skip_sources: list[str] = field(default_factory=lambda: ["code/*"])
    dup_para_frac: Optional[float] = 0.30       # table A1
    dup_para_char_frac: Optional[float] = 0.20
    dup_line_frac: Optional[float] = 0.30
    dup_line_char_frac: Optional[float] = 0.20
    top_2_gram_frac: Optional[float] = 0.20     # characters in the most frequent n-gram
    top_3_gram_frac: Optional[float] = 0.18
    top_4_gram_frac: Optional[float] = 0.16
    dup_5_gram_frac: Optional[float] = 0.15     # characters in duplicated n-grams
    dup_6_gram_frac: Optional[float] = 0.14
    dup_7_gram_frac: Optional[float] = 0.13
    dup_8_gram_frac: Optional[float] = 0.12
    dup_9_gram_frac: Optional[float] = 0.11
    dup_10_gram_frac: Optional[float] = 0.10


def _stop_word_regex(words: list[str]) -> re.Pattern:
    return re.compile(r"\b(?:%s)\b" % "|".join(map(re.escape, sorted(words, key=len, reverse=True))))


_STOP_RE: dict[tuple, re.Pattern] = {}


def check_quality(v: TextView, c: GopherQualityConfig) -> Optional[str]:
    """The first Gopher quality rule the document fails, or None."""
    text = v.text
    n = len(v.bare_words)  # words that are not only symbols
    if c.min_doc_words is not None and n < c.min_doc_words:
        return "min_doc_words"
    if c.max_doc_words is not None and n > c.max_doc_words:
        return "max_doc_words"
    if n == 0:
        return "min_doc_words"
    mean = len("".join(v.bare_words)) / n
    if c.min_avg_word_length is not None and mean < c.min_avg_word_length:
        return "min_avg_word_length"
    if c.max_avg_word_length is not None and mean > c.max_avg_word_length:
        return "max_avg_word_length"
    n_all = len(v.words)
    if c.max_symbol_word_ratio is not None:
        if text.count("#") / n_all > c.max_symbol_word_ratio:
            return "max_symbol_word_ratio"
        if (text.count("...") + text.count("…")) / n_all > c.max_symbol_word_ratio:
            return "max_symbol_word_ratio"
    lines = v.lines
    if lines and c.max_bullet_lines_ratio is not None:
        bullets = sum(1 for s in lines if s.lstrip().startswith(("•", "-")))
        if bullets / len(lines) > c.max_bullet_lines_ratio:
            return "max_bullet_lines_ratio"
    if lines and c.max_ellipsis_lines_ratio is not None:
        ell = sum(1 for s in lines if s.rstrip().endswith(("...", "…")))
        if ell / len(lines) > c.max_ellipsis_lines_ratio:
            return "max_ellipsis_lines_ratio"
    if c.min_alpha_words_ratio is not None and (n_all - v.no_letter_words) / n_all < c.min_alpha_words_ratio:
        return "min_alpha_words_ratio"
    if c.min_stop_words:
        key = tuple(c.stop_words)
        rx = _STOP_RE.get(key) or _STOP_RE.setdefault(key, _stop_word_regex(c.stop_words))
        found = set()
        for m in rx.finditer(text):
            found.add(m.group())
            if len(found) >= c.min_stop_words:
                break
        else:
            return "min_stop_words"
    return None


_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant: n-gram hash = polynomial in word hashes


def _word_hashes(words: list[str]) -> np.ndarray:
    # str hashes are computed in C and cached on the string; equal words, equal hashes.
    return np.fromiter(map(hash, words), dtype=np.int64, count=len(words)).view(np.uint64)


def _top_ngram_chars(h: np.ndarray, cum: np.ndarray, n: int) -> int:
    """Characters of the most frequent n-gram (joined by spaces) times its count; ties go to
    the earliest, as Counter.most_common does in datatrove."""
    _, first, counts = np.unique(h, return_index=True, return_counts=True)
    top = counts.max()
    if top < 2:
        return 0  # nothing repeats (datatrove would count the first n-gram here)
    i = int(first[counts == top].min())
    return int(cum[i + n] - cum[i] + n - 1) * int(top)


def _dup_ngram_chars(inverse: np.ndarray, counts: np.ndarray, cum: np.ndarray, n: int) -> int:
    """datatrove's greedy count: walk the n-grams; one seen before adds its characters (joined
    without spaces) and the walk jumps past it. Only n-grams occurring twice can ever be
    "seen", so the walk visits just those positions (a jump can only skip them)."""
    seen: set = set()
    chars, nxt = 0, 0
    ids = inverse.tolist()
    for i in np.flatnonzero(counts[inverse] > 1).tolist():
        if i < nxt:
            continue
        g = ids[i]
        if g in seen:
            chars += int(cum[i + n] - cum[i])
            nxt = i + n
        else:
            seen.add(g)
    return chars


def check_repetition(v: TextView, c: GopherRepetitionConfig) -> Optional[str]:
    """The first Gopher repetition rule the document fails, or None."""
    text = v.text
    size = len(text)
    paragraphs = PARAGRAPH_SPLIT.split(text.strip())
    dup, chars = duplicates(paragraphs)
    if c.dup_para_frac is not None and dup / len(paragraphs) > c.dup_para_frac:
        return "dup_para_frac"
    if c.dup_para_char_frac is not None and chars / size > c.dup_para_char_frac:
        return "dup_para_char_frac"
    lines = LINE_SPLIT.split(text)
    dup, chars = duplicates(lines)
    if c.dup_line_frac is not None and dup / len(lines) > c.dup_line_frac:
        return "dup_line_frac"
    if c.dup_line_char_frac is not None and chars / size > c.dup_line_char_frac:
        return "dup_line_char_frac"
    words = v.words
    if len(words) < 2:
        return None
    if len(words) < SMALL_DOC_WORDS:
        return _ngram_rules_small(words, size, c)
    return _ngram_rules(words, size, c)


# Below this many words, Counter over tuples beats numpy's per-call overhead.
SMALL_DOC_WORDS = 600


def _ngram_rules(words: list[str], size: int, c: GopherRepetitionConfig) -> Optional[str]:
    h = _word_hashes(words)
    cum = np.zeros(len(words) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, words), dtype=np.int64, count=len(words)), out=cum[1:])
    # n-gram hashes grow one word at a time: h_n[i] = h_{n-1}[i] * M + word[i + n - 1]
    grams = h
    for n in range(2, 11):
        if len(words) < n:
            break
        grams = grams[:-1] * _MULT + h[n - 1:]
        if n <= 4:
            frac = getattr(c, f"top_{n}_gram_frac")
            if frac is not None and _top_ngram_chars(grams, cum, n) / size > frac:
                return f"top_{n}_gram_frac"
            continue
        frac = getattr(c, f"dup_{n}_gram_frac")
        _, inverse, counts = np.unique(grams, return_inverse=True, return_counts=True)
        if len(counts) == len(grams):
            break  # no n-gram repeats, so no longer one can either
        if frac is not None and _dup_ngram_chars(inverse, counts, cum, n) / size > frac:
            return f"dup_{n}_gram_frac"
    return None


def _ngram_rules_small(words: list[str], size: int, c: GopherRepetitionConfig) -> Optional[str]:
    """The same rules with Python containers, for short documents."""
    ids = list(map(hash, words))
    lens = list(map(len, words))
    for n in range(2, 11):
        if len(words) < n:
            break
        grams = list(zip(*(ids[k:] for k in range(n))))
        counts = Counter(grams)
        if n <= 4:
            frac = getattr(c, f"top_{n}_gram_frac")
            if frac is None:
                continue
            best, top = max(counts.items(), key=itemgetter(1))
            if top < 2:
                continue
            i = grams.index(best)
            if (sum(lens[i:i + n]) + n - 1) * top / size > frac:
                return f"top_{n}_gram_frac"
            continue
        if len(counts) == len(grams):
            break
        frac = getattr(c, f"dup_{n}_gram_frac")
        if frac is None:
            continue
        seen: set = set()
        chars, nxt = 0, 0
        for i, g in enumerate(grams):
            if i < nxt or counts[g] < 2:
                continue
            if g in seen:
                chars += sum(lens[i:i + n])
                nxt = i + n
            else:
                seen.add(g)
        if chars / size > frac:
            return f"dup_{n}_gram_frac"
    return None
