"""One tokenisation per document, shared by every rule.

datatrove tokenises the same text again in each filter (with spaCy for English, which is
also why its Gopher "80% of words contain a letter" rule drops most posts: spaCy makes
every comma a word). Here words are whitespace-separated, as in the Gopher paper, split
once with ``str.split`` (C speed); lines and paragraphs likewise once. Everything is a
lazily computed attribute, so a rule that drops a document early pays for nothing more.
"""
from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from functools import cached_property

# ASCII punctuation plus the Unicode punctuation and symbol categories; a "word" made only
# of these (a dash, an ellipsis, a bullet) is a symbol, not a word (as in datatrove).
_UNICODE_PUNCT = "".join(
    chr(c) for c in range(0x80, 0x3000) if unicodedata.category(chr(c))[0] in "PS"
)
PUNCTUATION = string.punctuation + _UNICODE_PUNCT
_DELETE_PUNCT = str.maketrans("", "", PUNCTUATION)

# A whitespace word without any letter: every char is a digit, underscore or non-word char.
_NO_LETTER_WORD = re.compile(r"(?<!\S)(?:[^\w\s]|[\d_])+(?!\S)")
PARAGRAPH_SPLIT = re.compile(r"\n{2,}")
LINE_SPLIT = re.compile(r"\n+")


class TextView:
    """Lazily computed views of one document's text."""

    __slots__ = ("text", "__dict__")

    def __init__(self, text: str):
        self.text = text

    @cached_property
    def words(self) -> list[str]:
        return self.text.split()

    @cached_property
    def bare_words(self) -> list[str]:
        """Words with punctuation deleted; symbol-only words disappear."""
        return self.text.translate(_DELETE_PUNCT).split()

    @cached_property
    def lines(self) -> list[str]:
        return self.text.splitlines()

    @cached_property
    def nonempty_lines(self) -> list[str]:
        return [line for line in self.text.split("\n") if line.strip()]

    @cached_property
    def no_letter_words(self) -> int:
        return len(_NO_LETTER_WORD.findall(self.text))


def duplicates(items: list[str]) -> tuple[int, int]:
    """(number of repeated items, characters in them) counting every occurrence after the first."""
    counts = Counter(items)
    if len(counts) == len(items):
        return 0, 0
    n = chars = 0
    for item, c in counts.items():
        if c > 1:
            n += c - 1
            chars += (c - 1) * len(item)
    return n, chars
