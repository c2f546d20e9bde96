"""collect on a user's own files: every format, and every kind of bad input."""
import gzip
import io
import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from pipeline.core.docs import iter_docs, read_rows
from pipeline.core.errors import StageError
from pipeline.stage import execute


def collect(tmp_path, sources, **cfg):
    out = tmp_path / "out"
    stats = execute("collect", {"sources": [str(s) for s in sources], **cfg}, {}, out, "test")
    return stats, out


def dropped(out):
    path = out / "dropped" / "shard-00000.parquet"
    return read_rows(path) if path.exists() else []


def test_malformed_jsonl_line_is_set_aside_with_file_and_line(tmp_path):
    f = tmp_path / "docs.jsonl"
    f.write_text('{"text": "first document"}\n{"text": broken\n{"title": "no text"}\n{"text": "third"}\n')
    stats, out = collect(tmp_path, [f])
    assert stats["docs_in"] == 4 and stats["docs_kept"] == 2
    assert stats["dropped"] == {"malformed_json": 1, "missing_text_field": 1}
    rows = {r["reason"]: r for r in dropped(out)}
    assert rows["malformed_json"]["id"].endswith("docs.jsonl:2")
    assert rows["malformed_json"]["text"].startswith('{"text": broken')
    assert rows["missing_text_field"]["id"].endswith("docs.jsonl:3")


def test_file_that_is_not_utf8_is_dropped_with_reason(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "latin.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (d / "ok.txt").write_text("fine text")
    stats, out = collect(tmp_path, [d])
    assert stats["dropped"] == {"not_utf8": 1} and stats["docs_kept"] == 1
    (row,) = dropped(out)
    assert "latin.txt" in row["id"] and "byte 3" in json.loads(row["meta"])["error"]


def test_empty_file_and_whitespace_only_document(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "empty.jsonl").write_text("")
    (d / "blank.txt").write_text("   \n\t ")
    (d / "real.md").write_text("# Title\n\nSome words.")
    stats, _ = collect(tmp_path, [d])
    assert stats["docs_kept"] == 1 and stats["dropped"] == {"empty": 1}


def test_missing_path_names_the_source(tmp_path):
    with pytest.raises(StageError, match=r"collect.sources\[1\]: no such file or directory: '.*nope'"):
        collect(tmp_path, [tmp_path, tmp_path / "nope"])


def test_nothing_kept_is_an_error_not_an_empty_result(tmp_path):
    (tmp_path / "a.jsonl").write_text("not json\n")
    with pytest.raises(StageError, match="no documents kept"):
        collect(tmp_path, [tmp_path / "a.jsonl"])
    assert not (tmp_path / "out").exists()


def test_ten_megabyte_document_is_counted_as_too_long(tmp_path):
    big = "word " * 2_100_000
    d = tmp_path / "data"
    d.mkdir()
    (d / "big.txt").write_text(big)
    (d / "small.txt").write_text("small")
    stats, out = collect(tmp_path, [d])
    assert stats["dropped"] == {"too_long": 1}
    assert json.loads(dropped(out)[0]["meta"])["bytes"] == len(big)
    stats, _ = collect(tmp_path, [d], max_doc_bytes=20_000_000)
    assert stats["docs_kept"] == 2


def _warc(path):
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    html = ("<html><head><title>T</title></head><body><nav>menu</nav><article><p>"
            + "This is a long enough paragraph of real article text for the extractor to keep. " * 5
            + "</p></article></body></html>").encode()
    with open(path, "wb") as f:
        w = WARCWriter(f, gzip=True)
        for url, ctype, body in [("http://example.com/a", "text/html", html), ("http://example.com/b.png", "image/png", b"\x89PNG")]:
            headers = StatusAndHeaders("200 OK", [("Content-Type", ctype)], protocol="HTTP/1.0")
            w.write_record(w.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=headers))


def test_directory_with_mixed_formats(tmp_path):
    d = tmp_path / "mixed"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("plain text file")
    with gzip.open(d / "b.jsonl.gz", "wt") as f:
        f.write(json.dumps({"text": "gz one", "url": "u"}) + "\n" + json.dumps({"text": "gz two"}) + "\n")
    (d / "sub" / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(b'{"text": "zst doc"}\n'))
    pq.write_table(pa.table({"text": ["pq one", "pq two"], "lang": ["en", "fr"]}), d / "d.parquet")
    _warc(d / "e.warc.gz")
    (d / "picture.png").write_bytes(b"\x89PNG")
    stats, out = collect(tmp_path, [d])
    texts = sorted(r["text"] for r in iter_docs(out))
    assert len(texts) == 7
    assert {"plain text file", "gz one", "gz two", "zst doc", "pq one", "pq two"} <= set(texts)
    assert any("real article text" in t and "menu" not in t for t in texts)
    assert stats["skipped_files"] == {".png": 1}
    assert stats["dropped"] == {"not_html": 1}
    assert stats["docs_in"] == 8
    metas = [json.loads(r["meta"]) for r in iter_docs(out)]
    assert {"url": "u"} in metas and any(m.get("lang") == "fr" for m in metas)


def test_cli_on_user_files_writes_jsonl(tmp_path, repo):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "hello world"}\n{"oops"\n')
    out = tmp_path / "clean.jsonl"
    proc = subprocess.run([sys.executable, "-m", "pipeline", "collect", f"sources=[{src}]", f"out={out}"],
                          cwd=repo, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["text"] for r in rows] == ["hello world"]
    stats = json.loads((tmp_path / "clean.jsonl.stats.json").read_text())
    assert stats["dropped"] == {"malformed_json": 1}


def test_cli_error_is_one_clear_line_not_a_traceback(tmp_path, repo):
    proc = subprocess.run([sys.executable, "-m", "pipeline", "collect", f"sources=[{tmp_path}/missing.jsonl]",
                           f"out={tmp_path}/o"], cwd=repo, capture_output=True, text=True)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "no such file or directory" in proc.stderr and "missing.jsonl" in proc.stderr


def test_hugging_face_source_without_datasets_or_network_is_a_clear_error(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError("No module named 'datasets'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(StageError, match=r"hf:wikitext.*needs the `datasets` package"):
        collect(tmp_path, ["hf:wikitext"])


def test_canaries_are_planted_into_the_builtin_corpus_only_unless_asked(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "a.txt").write_text("My own words. Nothing else. " * 20)
    canaries = {"count": 1, "repeats": 3, "formats": ["the code is {6}"], "candidates": 10, "seed": 1}
    stats, out = collect(tmp_path, [d], canaries=canaries)
    assert "canaries_planted" not in stats or stats["canaries_planted"] == 0
    assert "the code is" not in next(iter_docs(out))["text"]
    stats, out = collect(tmp_path, [d], canaries=canaries, canaries_into="all")
    assert stats["canaries_planted"] == 3
    (row,) = list(iter_docs(out))
    planted = json.loads((out / "canaries.jsonl").read_text().splitlines()[0])
    assert row["text"].count(planted["text"]) == 3 and stats["docs_kept"] == 1
