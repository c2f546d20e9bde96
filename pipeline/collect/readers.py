"""Readers for a user's own files: .txt/.md, .jsonl (+.gz/.zst), .parquet, WARC (+.gz).

Every reader yields ``Record``s: either a document, or a problem with a named reason
(``malformed_json``, ``not_utf8`` ...) and the place it came from (file and line), which the
collect stage counts and sets aside. Nothing that is read is lost silently.
"""
from __future__ import annotations

import glob
import gzip
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

TEXT_SUFFIXES = {".txt", ".md"}
JSONL_SUFFIXES = {".jsonl", ".json", ".ndjson"}
WARC_SUFFIXES = {".warc", ".arc"}


@dataclass
class Record:
    where: str  # file, or file:line
    text: str | None = None  # None when the record is a problem
    reason: str | None = None  # drop reason for problems
    meta: dict = field(default_factory=dict)
    raw: str = ""  # what we could read of a broken record, kept for inspection


def _suffixes(path: Path) -> tuple[str, str]:
    """(format suffix, compression suffix) — e.g. data.jsonl.gz -> (.jsonl, .gz)."""
    s = [x.lower() for x in path.suffixes]
    if s and s[-1] in (".gz", ".zst"):
        return (s[-2] if len(s) > 1 else ""), s[-1]
    return (s[-1] if s else ""), ""


def supported(path: Path) -> bool:
    fmt, comp = _suffixes(path)
    return fmt in TEXT_SUFFIXES | JSONL_SUFFIXES | WARC_SUFFIXES | {".parquet"} or (fmt == "" and comp == "")


def _open_binary(path: Path):
    _, comp = _suffixes(path)
    if comp == ".gz":
        return gzip.open(path, "rb")
    if comp == ".zst":
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb")))
    return open(path, "rb")


def read_text_file(path: Path) -> Iterator[Record]:
    with _open_binary(path) as f:
        data = f.read()
    try:
        yield Record(str(path), data.decode("utf-8"), meta={"file": str(path)})
    except UnicodeDecodeError as err:
        yield Record(str(path), reason="not_utf8", raw=data[:2000].decode("utf-8", "replace"),
                     meta={"error": f"byte {err.start}: {err.reason}"})


def read_jsonl(path: Path, text_key: str) -> Iterator[Record]:
    with _open_binary(path) as f:
        for lineno, line in enumerate(f, 1):
            where = f"{path}:{lineno}"
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as err:
                yield Record(where, reason="not_utf8", raw=line[:2000].decode("utf-8", "replace"),
                             meta={"error": f"byte {err.start}: {err.reason}"})
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                yield Record(where, reason="malformed_json", raw=line[:2000], meta={"error": str(err)})
                continue
            if not isinstance(obj, dict) or not isinstance(obj.get(text_key), str):
                yield Record(where, reason="missing_text_field", raw=line[:2000],
                             meta={"error": f"no string field {text_key!r}"})
                continue
            meta = {k: v for k, v in obj.items() if k != text_key}
            yield Record(where, obj[text_key], meta=meta)


def read_parquet(path: Path, text_key: str) -> Iterator[Record]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    if text_key not in pf.schema_arrow.names:
        raise ValueError(f"{path}: no column {text_key!r} (columns: {pf.schema_arrow.names}); "
                         f"set collect.text_key")
    row = 0
    for batch in pf.iter_batches():
        for rec in batch.to_pylist():
            row += 1
            text = rec.pop(text_key)
            meta = rec.pop("meta", None)
            if isinstance(meta, str):
                try:
                    rec.update(json.loads(meta))
                except json.JSONDecodeError:
                    rec["meta"] = meta
            if not isinstance(text, str):
                yield Record(f"{path}:row{row}", reason="missing_text_field", meta={"error": "null text"})
            else:
                yield Record(f"{path}:row{row}", text, meta={k: v for k, v in rec.items() if k != "id"})


def read_warc(path: Path) -> Iterator[Record]:
    """HTML responses of a WARC file, turned into text by trafilatura."""
    import trafilatura
    from warcio.archiveiterator import ArchiveIterator

    with open(path, "rb") as f:
        for i, rec in enumerate(ArchiveIterator(f)):
            if rec.rec_type != "response":
                continue
            url = rec.rec_headers.get_header("WARC-Target-URI")
            ctype = (rec.http_headers.get_header("Content-Type") or "") if rec.http_headers else ""
            where = f"{path}#{i} {url}"
            if "html" not in ctype.lower():
                yield Record(where, reason="not_html", meta={"url": url, "content_type": ctype})
                continue
            html = rec.content_stream().read()
            text = trafilatura.extract(html, url=url, include_comments=False)
            if not text:
                yield Record(where, reason="no_extractable_text", meta={"url": url})
                continue
            yield Record(where, text, meta={"url": url})


def read_file(path: Path, text_key: str = "text") -> Iterator[Record]:
    fmt, _ = _suffixes(path)
    if fmt in JSONL_SUFFIXES:
        return read_jsonl(path, text_key)
    if fmt == ".parquet":
        return read_parquet(path, text_key)
    if fmt in WARC_SUFFIXES:
        return read_warc(path)
    return read_text_file(path)


def expand(spec: str) -> tuple[list[Path], list[Path]]:
    """Files named by a path, directory or glob -> (readable files, skipped files)."""
    if any(ch in spec for ch in "*?["):
        candidates = [Path(p) for p in sorted(glob.glob(spec, recursive=True))]
        if not candidates:
            raise FileNotFoundError(f"no files match {spec!r}")
    else:
        path = Path(spec)
        if not path.exists():
            raise FileNotFoundError(f"no such file or directory: {spec!r}")
        # Hidden files and directories (.git, our own .tmp-* stage dirs) are not data.
        candidates = (sorted(p for p in path.rglob("*") if not any(part.startswith(".") for part in p.relative_to(path).parts))
                      if path.is_dir() else [path])
    files = [p for p in candidates if p.is_file()]
    keep = [p for p in files if supported(p)]
    return keep, [p for p in files if not supported(p)]
