"""Users' ids: kept as they came, made only where a record has none, never a machine path."""
import io
import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.core.docs import iter_docs, read_rows
from pipeline.stage import execute, stage_module

WORDS = "plenty of ordinary words make this a document that every filter keeps without a doubt"


def collect(tmp_path, sources, name="out", **cfg):
    out = tmp_path / name
    stats = execute("collect", {"sources": [str(s) for s in sources], **cfg}, {}, out, "test")
    return stats, out


def dropped(out):
    path = out / "dropped" / "shard-00000.parquet"
    return read_rows(path) if path.exists() else []


def everything_written(out) -> str:
    """Every byte of data a step wrote (shards, dropped, samples), as text."""
    rows = list(iter_docs(out)) + dropped(out)
    return json.dumps(rows, ensure_ascii=False) + (out / "samples.jsonl").read_text()


def jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_user_ids_are_kept_and_missing_ones_made_from_the_file_and_line(tmp_path):
    src = jsonl(tmp_path / "in.jsonl", [{"id": "doc-a", "text": "one " + WORDS}, {"id": 17, "text": "two " + WORDS},
                                        {"text": "three " + WORDS}, {"id": None, "text": "four " + WORDS}])
    stats, out = collect(tmp_path, [src])
    assert [r["id"] for r in iter_docs(out)] == ["doc-a", "17", "local/in.jsonl:3", "local/in.jsonl:4"]
    assert all("id" not in json.loads(r["meta"]) for r in iter_docs(out))  # not moved into meta either
    assert stats["docs_in"] == 4 and stats["docs_kept"] == 4
    assert str(tmp_path) not in everything_written(out)


def test_ids_in_a_directory_are_relative_to_the_directory(tmp_path):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    jsonl(data / "sub" / "a.jsonl", [{"text": "a " + WORDS}, {"text": "b " + WORDS}])
    (data / "notes.txt").write_text("notes " + WORDS)
    pq.write_table(pa.table({"text": ["p " + WORDS, "q " + WORDS], "id": ["P", None]}), data / "t.parquet")
    _, out = collect(tmp_path, [data])
    docs = {r["id"]: json.loads(r["meta"]) for r in iter_docs(out)}
    assert set(docs) == {"local/data/notes.txt", "local/data/sub/a.jsonl:1", "local/data/sub/a.jsonl:2",
                         "P", "local/data/t.parquet:row2"}
    assert docs["local/data/notes.txt"] == {"file": "notes.txt"}
    _, out = collect(tmp_path, [f"{data}/**/*.jsonl"], name="glob")
    assert [r["id"] for r in iter_docs(out)] == ["local/data/sub/a.jsonl:1", "local/data/sub/a.jsonl:2"]
    assert str(tmp_path) not in everything_written(out)


def test_a_second_document_with_a_taken_id_is_set_aside_naming_the_first(tmp_path):
    src = jsonl(tmp_path / "in.jsonl", [{"id": "x", "text": "first " + WORDS}, {"id": "y", "text": "other " + WORDS},
                                        {"id": "x", "text": "second " + WORDS}])
    stats, out = collect(tmp_path, [src])
    assert [r["text"].split()[0] for r in iter_docs(out)] == ["first", "other"]
    assert stats["dropped"] == {"duplicate_id": 1} and stats["docs_in"] == 3
    (row,) = dropped(out)
    meta = json.loads(row["meta"])
    assert row["id"] == "x" and row["reason"] == "duplicate_id" and row["text"].startswith("second")
    assert meta["where"] == "in.jsonl:3" and meta["first_seen"] == "local/in.jsonl in.jsonl:1"


def test_the_same_file_named_twice_is_read_once(tmp_path):
    src = jsonl(tmp_path / "in.jsonl", [{"text": "a " + WORDS}, {"id": "b", "text": "b " + WORDS}])
    stats, out = collect(tmp_path, [src, src])
    assert len(list(iter_docs(out))) == 2 and stats["dropped"] == {"duplicate_id": 2}


@pytest.mark.parametrize("bad", [["a", "list"], True, "", 1.5, {"nested": 1}])
def test_an_id_that_is_not_a_string_or_integer_is_set_aside(tmp_path, bad):
    src = jsonl(tmp_path / "in.jsonl", [{"text": "fine " + WORDS}, {"id": bad, "text": "odd " + WORDS}])
    stats, out = collect(tmp_path, [src])
    assert stats["dropped"] == {"bad_id": 1}
    (row,) = dropped(out)
    meta = json.loads(row["meta"])
    assert meta["where"] == "in.jsonl:2" and "ids are non-empty strings or integers" in meta["error"]


def test_warc_records_keep_their_record_id(tmp_path):
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    html = f"<html><body><article><p>{WORDS}. {WORDS}. {WORDS}.</p></article></body></html>".encode()
    with open(tmp_path / "a.warc.gz", "wb") as f:
        w = WARCWriter(f, gzip=True)
        headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html")], protocol="HTTP/1.0")
        record = w.create_warc_record("http://example.com/a", "response", payload=io.BytesIO(html), http_headers=headers)
        w.write_record(record)
    _, out = collect(tmp_path, [tmp_path / "a.warc.gz"])
    (row,) = list(iter_docs(out))
    assert row["id"] == record.rec_headers.get_header("WARC-Record-ID") and row["id"].startswith("<urn:uuid:")


@pytest.mark.parametrize("stage", ["filter", "scrub"])
def test_stages_reading_a_users_file_keep_its_ids(tmp_path, stage):
    prose = ("The river rose after three days of rain. Farmers moved their cattle to higher fields. "
             "Schools in the valley closed early on Tuesday. The mayor asked drivers to avoid the old bridge. "
             "Volunteers filled sandbags outside the library. By Friday the water had started to fall. "
             "Engineers will inspect the dam next week before the roads open again. "
             "Most shops expect to reopen once the cleaning is finished.")
    src = jsonl(tmp_path / "in.jsonl", [{"id": "mine-1", "text": prose},
                                        {"id": "mine-2", "text": "Mail me at jo@example.org today. " + prose}])
    _, docs = collect(tmp_path, [src])
    role = next(iter(stage_module(stage).INPUTS))
    execute(stage, {}, {role: docs}, tmp_path / stage, "test")
    assert [r["id"] for r in iter_docs(tmp_path / stage)] == ["mine-1", "mine-2"]


@pytest.mark.slow  # a fresh interpreter composing the config (~10 s on a 2-core runner)
def test_dedup_on_a_users_jsonl_keeps_its_ids(tmp_path, repo):
    src = jsonl(tmp_path / "docs.jsonl", [{"id": "a", "text": "one " + WORDS}, {"id": "b", "text": "one " + WORDS},
                                          {"text": "a different text altogether, " + WORDS}])
    proc = subprocess.run([sys.executable, "-m", "pipeline", "dedup", f"in={src}", f"out={tmp_path / 'kept.jsonl'}"],
                          cwd=repo, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "kept.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "local/docs.jsonl:3"]
    assert str(tmp_path) not in (tmp_path / "kept.jsonl").read_text()


def test_hugging_face_rows_keep_their_id_field(tmp_path, monkeypatch):
    import types

    rows = [{"id": "hf-1", "text": "one " + WORDS, "lang": "en"}, {"text": "two " + WORDS}, {"id": [1], "text": "x"}]
    fake = types.SimpleNamespace(load_dataset=lambda name, split, streaming: iter(rows))
    monkeypatch.setitem(sys.modules, "datasets", fake)
    stats, out = collect(tmp_path, ["hf:someone/corpus:train"])
    assert [r["id"] for r in iter_docs(out)] == ["hf-1", "hf/someone/corpus:train:1"]
    assert json.loads(next(iter_docs(out))["meta"]) == {"lang": "en"}
    assert stats["dropped"] == {"bad_id": 1} and json.loads(dropped(out)[0]["meta"])["where"] == "train:2"
