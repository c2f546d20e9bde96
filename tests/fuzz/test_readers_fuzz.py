"""Fuzzing collect's readers: whatever the bytes, every record is kept or set aside with a reason and a place.

Each input becomes a file read the way ``collect`` reads it (readers, then the collector,
then Parquet shards), so a record that could be read but not stored is caught too.
"""
import gzip
import io
import json
import logging
import re
import tempfile
import zlib
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from pipeline.collect import Config
from pipeline.collect.collector import Collector, read_local
from pipeline.core.docs import iter_docs, read_rows
from tests.fuzz.conftest import RAN

REASONS = {"malformed_json", "not_utf8", "missing_text_field", "bad_id", "unreadable", "too_long", "empty",
           "duplicate_id", "not_html", "no_extractable_text"}
LOG = logging.getLogger("fuzz")
LOG.addHandler(logging.NullHandler())
LOG.propagate = False


def collect_bytes(name: str, data: bytes, **cfg) -> tuple[dict, list[dict], list[dict]]:
    """(stats, kept rows, dropped rows) of collect on one file holding ``data``."""
    with tempfile.TemporaryDirectory() as tmp:
        path, out = Path(tmp) / name, Path(tmp) / "out"
        path.write_bytes(data)
        out.mkdir()  # as execute() gives a stage its folder
        config = Config(sources=[str(path)], **cfg)
        col = Collector(config, out, LOG)
        read_local(str(path), 0, config, col, Counter())
        stats = col.close(out)
        kept = list(iter_docs(out))
        dropped = read_rows(out / "dropped" / "shard-00000.parquet") if (out / "dropped").exists() else []
    assert str(tmp) not in json.dumps([kept, dropped])  # no machine path in the data
    return stats, kept, dropped


def check_accounting(name: str, stats: dict, kept: list, dropped: list, line_numbers: bool) -> None:
    assert stats["docs_in"] == stats["docs_kept"] + sum(stats["dropped"].values())
    assert len(kept) == stats["docs_kept"] and len(dropped) == sum(stats["dropped"].values())
    assert set(stats["dropped"]) <= REASONS, stats["dropped"]
    for row in dropped:
        where = json.loads(row["meta"])["where"]
        assert where.startswith(name), where
        if line_numbers:
            assert re.fullmatch(re.escape(name) + r"(:row)?:?\d+|" + re.escape(name) + r"#\d+", where), where
    assert len({r["id"] for r in kept}) == len(kept)


SUFFIXES = ["a.txt", "a.md", "a.jsonl", "a.jsonl.gz", "a.jsonl.zst", "a.parquet", "a.warc", "a.warc.gz", "noext"]


@given(st.sampled_from(SUFFIXES), st.binary(max_size=3000))
def test_random_bytes_in_every_format(name, data):
    RAN["random bytes"] += 1
    stats, kept, dropped = collect_bytes(name, data)
    check_accounting(name, stats, kept, dropped, line_numbers=name.endswith((".jsonl", ".gz", ".zst", ".parquet")))


def _compress(kind: str, data: bytes) -> bytes:
    return gzip.compress(data) if kind == "gz" else zstandard.ZstdCompressor().compress(data)


@given(st.sampled_from(["gz", "zst"]), st.binary(max_size=2000), st.data())
def test_compressed_random_payloads_and_cut_streams(kind, payload, data):
    RAN["compressed random / cut"] += 1
    blob = _compress(kind, payload)
    blob = blob[:data.draw(st.integers(0, len(blob)))]
    stats, kept, dropped = collect_bytes(f"a.jsonl.{kind}", blob)
    check_accounting(f"a.jsonl.{kind}", stats, kept, dropped, line_numbers=True)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=8)
SURROGATES = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=2)
TEXT = st.one_of(st.text(max_size=200), st.text(max_size=20).map(lambda t: t + " words " * 3), SURROGATES)
RECORD = st.fixed_dictionaries({"text": st.one_of(TEXT, JSON)},
                               optional={"id": st.one_of(st.text(max_size=8), st.integers(), JSON), "url": JSON})
LINE = st.one_of(RECORD.map(lambda r: json.dumps(r).encode()),  # ensure_ascii: surrogates arrive as \ud800
                 JSON.map(lambda v: json.dumps(v).encode()),
                 st.binary(max_size=60),
                 RECORD.map(lambda r: json.dumps(r, ensure_ascii=False).encode("utf-8", "surrogatepass")))


@given(st.lists(LINE, max_size=12), st.sampled_from(["", ".gz", ".zst"]))
def test_jsonl_with_wrong_types_bad_ids_and_invalid_utf8(lines, compression):
    RAN["jsonl structured"] += 1
    blob = b"\n".join(line.replace(b"\n", b" ") for line in lines)
    name = "a.jsonl" + compression
    blob = _compress(compression[1:], blob) if compression else blob
    stats, kept, dropped = collect_bytes(name, blob)
    check_accounting(name, stats, kept, dropped, line_numbers=True)
    assert all(isinstance(r["text"], str) and r["text"].strip() for r in kept)


@given(st.lists(st.text(st.characters(categories=["L", "N", "Zs"]), min_size=1, max_size=30), min_size=1, max_size=30),
       st.sampled_from(["gz", "zst"]), st.data())
def test_a_cut_stream_keeps_what_came_before_and_says_where_it_broke(texts, kind, data):
    RAN["cut stream prefix"] += 1
    texts = [t for t in texts if t.strip()] or ["x"]
    blob = _compress(kind, "".join(json.dumps({"text": t}) + "\n" for t in texts).encode())
    cut = data.draw(st.integers(1, len(blob) - 1))  # an empty file is no records, not a cut one
    stats, kept, dropped = collect_bytes(f"a.jsonl.{kind}", blob[:cut])
    got = [r["text"] for r in kept]
    assert got == texts[:len(got)]  # a prefix: nothing reordered or invented
    assert dropped and dropped[-1]["reason"] in ("unreadable", "malformed_json")  # the break is a record with a place
    assert stats["docs_in"] == len(kept) + len(dropped)


def _column(kind: str, n: int, draw):
    values = {
        "str": st.one_of(st.none(), st.text(max_size=40)), "int": st.one_of(st.none(), st.integers(-2**63, 2**63 - 1)),
        "float": st.floats(), "bool": st.booleans(), "bytes": st.binary(max_size=10),
        "list": st.lists(st.integers(0, 9), max_size=3), "json": JSON.map(json.dumps),
    }[kind]
    return draw(st.lists(values, min_size=n, max_size=n))


@given(st.data())
def test_parquet_with_missing_columns_and_wrong_types(data):
    RAN["parquet structured"] += 1
    n = data.draw(st.integers(0, 6))
    kinds = ["str", "int", "float", "bool", "bytes", "list", "json"]
    names = data.draw(st.lists(st.sampled_from(["text", "id", "meta", "url", "extra"]), unique=True, max_size=5))
    table = pa.table({c: _column(data.draw(st.sampled_from(kinds)), n, data.draw) for c in names}) if names else pa.table({})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    blob = buf.getvalue()
    if data.draw(st.booleans()):
        blob = blob[:data.draw(st.integers(0, len(blob)))]
    stats, kept, dropped = collect_bytes("t.parquet", blob)
    check_accounting("t.parquet", stats, kept, dropped, line_numbers=True)
    if blob == buf.getvalue() and names and n:
        assert stats["docs_in"] == n  # every row is a record, kept or set aside


def _warc(records, gzip_records: bool) -> bytes:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    buf = io.BytesIO()
    w = WARCWriter(buf, gzip=gzip_records)
    for i, (kind, ctype, body) in enumerate(records):
        headers = StatusAndHeaders("200 OK", [("Content-Type", ctype)], protocol="HTTP/1.0")
        fixed = {"WARC-Record-ID": f"<urn:uuid:00000000-0000-0000-0000-{i:012d}>", "WARC-Date": "2024-01-01T00:00:00Z"}
        w.write_record(w.create_warc_record("http://example.com/x", kind, payload=io.BytesIO(body), warc_headers_dict=fixed,
                                            http_headers=headers if kind == "response" else None))
    return buf.getvalue()


HTML = st.text(max_size=300).map(lambda t: f"<html><body><article><p>{t}</p></article></body></html>".encode("utf-8", "replace"))
WARC_RECORD = st.tuples(st.sampled_from(["response", "resource", "metadata"]),
                        st.sampled_from(["text/html", "text/html; charset=latin-1", "image/png", ""]),
                        st.one_of(HTML, st.binary(max_size=200)))


@given(st.lists(WARC_RECORD, min_size=1, max_size=4), st.sampled_from(["plain", "per-record gzip", "one gzip"]),
       st.data())
def test_broken_warc_records(records, packing, data):
    RAN["warc structured"] += 1
    blob = _warc(records, gzip_records=packing == "per-record gzip")
    blob = zlib.compress(blob, wbits=31) if packing == "one gzip" else blob
    mutation = data.draw(st.sampled_from(["none", "cut", "overwrite"]))
    if mutation == "cut":
        blob = blob[:data.draw(st.integers(0, len(blob)))]
    elif mutation == "overwrite":
        at = data.draw(st.integers(0, len(blob) - 1))
        blob = blob[:at] + data.draw(st.binary(min_size=1, max_size=20)) + blob[at + 20:]
    name = "a.warc" if packing == "plain" else "a.warc.gz"
    stats, kept, dropped = collect_bytes(name, blob)
    check_accounting(name, stats, kept, dropped, line_numbers=True)
    if mutation == "none":
        assert stats["docs_in"] == sum(kind == "response" for kind, _, _ in records)
