"""Bad input the fuzzers found or the readers must survive: each set aside with a reason and a place."""
import gzip
import io
import json
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from pipeline.core.docs import iter_docs, read_rows
from pipeline.stage import execute


def collect(tmp_path, sources, **cfg):
    out = tmp_path / "out"
    stats = execute("collect", {"sources": [str(s) for s in sources], **cfg}, {}, out, "test")
    return stats, out


def dropped(out):
    path = out / "dropped" / "shard-00000.parquet"
    return {r["reason"]: r for r in read_rows(path)} if path.exists() else {}


def lines(n):
    return "".join(json.dumps({"text": f"document number {i}"}) + "\n" for i in range(n)).encode()


@pytest.mark.parametrize("suffix, compress", [(".gz", gzip.compress), (".zst", zstandard.ZstdCompressor().compress)])
def test_a_cut_compressed_file_keeps_what_came_before_and_sets_the_rest_aside(tmp_path, suffix, compress):
    blob = compress(lines(50_000))  # zstd frees output a 128 KB block at a time
    (tmp_path / f"a.jsonl{suffix}").write_bytes(blob[: len(blob) // 2])
    (tmp_path / "b.jsonl").write_bytes(lines(3))  # the next file is still read
    stats, out = collect(tmp_path, [tmp_path])
    texts = [r["text"] for r in iter_docs(out)]
    n = len(texts) - 3
    assert 0 < n < 50_000 and texts[:n] == [f"document number {i}" for i in range(n)]
    assert stats["dropped"] == {"unreadable": 1}
    meta = json.loads(dropped(out)["unreadable"]["meta"])
    assert meta["where"] == f"a.jsonl{suffix}:{n + 1}" and ("EOFError" in meta["error"] or "ended" in meta["error"])


def test_zstd_frames_one_after_another_are_all_read(tmp_path):
    z = zstandard.ZstdCompressor()
    (tmp_path / "a.jsonl.zst").write_bytes(z.compress(lines(2)) + z.compress(b'{"text": "third frame"}\n'))
    stats, out = collect(tmp_path, [tmp_path / "a.jsonl.zst"])
    assert stats["docs_kept"] == 3 and stats["dropped"] == {}


def test_json_escapes_utf8_cannot_store_are_set_aside(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "fine"}\n{"text": "lone \\ud800 surrogate"}\n{"text": "ok", "m": "\\udfff"}\n')
    stats, out = collect(tmp_path, [tmp_path / "a.jsonl"])
    assert stats["docs_kept"] == 1 and stats["dropped"] == {"not_utf8": 2}


def test_parquet_without_the_text_column_sets_each_row_aside_and_others_still_count(tmp_path):
    pq.write_table(pa.table({"body": ["x", "y"], "id": [1, 2]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"text": ["kept"], "blob": [b"\x00\xff"]}), tmp_path / "b.parquet")
    stats, out = collect(tmp_path, [tmp_path])
    assert stats["docs_in"] == 3 and stats["dropped"] == {"missing_text_field": 2}
    row = dropped(out)["missing_text_field"]
    assert "no column 'text' (columns: ['body', 'id'])" in json.loads(row["meta"])["error"]
    (kept,) = iter_docs(out)
    assert json.loads(kept["meta"]) == {"blob": str(b"\x00\xff")}  # bytes become text in JSON meta


def _warc(records, gzip_records=False) -> bytes:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    buf = io.BytesIO()
    w = WARCWriter(buf, gzip=gzip_records)
    for url, body in records:
        headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html")], protocol="HTTP/1.0")
        w.write_record(w.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=headers))
    return buf.getvalue()


PAGE = b"<html><body><article><p>" + b"A paragraph of article text long enough to keep. " * 6 + b"</p></article></body></html>"


def test_a_warc_gzipped_as_one_member_reads_like_a_standard_one(tmp_path):
    (tmp_path / "one.warc.gz").write_bytes(gzip.compress(_warc([("http://a.org/1", PAGE), ("http://a.org/2", PAGE)])))
    stats, _ = collect(tmp_path, [tmp_path / "one.warc.gz"])
    assert stats["docs_kept"] == 2 and stats["dropped"] == {}


def test_a_broken_warc_header_is_set_aside_with_its_record_number(tmp_path):
    blob = _warc([("http://a.org/1", PAGE), ("http://a.org/2", PAGE)])
    second = blob.index(b"WARC/1.0", 10)
    broken = blob[:second] + blob[second:].replace(b"WARC-Target-URI", b"WARC-Target-XXX", 1)
    (tmp_path / "a.warc").write_bytes(broken)
    stats, out = collect(tmp_path, [tmp_path / "a.warc"])
    assert stats["docs_kept"] == 1 and stats["dropped"] == {"unreadable": 1}
    assert json.loads(dropped(out)["unreadable"]["meta"])["where"].startswith("a.warc#")


@pytest.mark.parametrize("name, opener", [("big.jsonl", open), ("big.jsonl.gz", lambda p, m: gzip.open(p, m, compresslevel=1))])
def test_a_100_megabyte_line_is_set_aside_without_being_held_in_memory(tmp_path, name, opener):
    with opener(tmp_path / name, "wb") as f:
        f.write(b'{"text": "before"}\n{"text": "')
        for _ in range(100):
            f.write(b"a" * 1_000_000)
        f.write(b'"}\n{"text": "after"}\n')
    tracemalloc.start()
    try:
        stats, out = collect(tmp_path, [tmp_path / name])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [r["text"] for r in iter_docs(out)] == ["before", "after"]
    assert stats["dropped"] == {"too_long": 1}
    meta = json.loads(dropped(out)["too_long"]["meta"])
    assert meta["where"] == f"{name}:2" and meta["bytes"] == 100_000_000 + 13  # with its JSON and newline
    assert peak < 40_000_000  # the line is skipped in pieces, never read whole (it is 100 MB)
