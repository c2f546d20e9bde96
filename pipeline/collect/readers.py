"""Readers for a user's own files: .txt/.md, .jsonl (+.gz/.zst), .parquet, WARC (+.gz).

Every reader yields ``Record``s: either a document, or a problem with a named reason
(``malformed_json``, ``not_utf8``, ``unreadable`` ...) and the place it came from (file and
line, the file named relative to the source's root), which the collect stage counts and sets
aside. Nothing that is read is lost silently, and a broken file stops only itself: what was
read before the break is kept, the break is one record set aside where it happened.

A record's own id (the ``id_key`` field of JSONL and Parquet, a WARC record's
``WARC-Record-ID``) is kept as it came; collect makes one only where a record has none.
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
RAW_CHARS = 2000  # what a set-aside record keeps of itself, for inspection
# A line or file this many times longer than the longest document is never parsed (it is set
# aside as too_long): JSON escapes only shrink text, so none of its documents could be kept
# unless nearly all of it were metadata.
SCAN_FACTOR = 8


@dataclass
class Record:
    where: str  # file relative to the source root, or file:line
    text: str | None = None  # None when the record is a problem
    reason: str | None = None  # drop reason for problems
    meta: dict = field(default_factory=dict)
    raw: str = ""  # what we could read of a broken record, kept for inspection
    id: str | None = None  # the record's own id, as the user gave it


def _suffixes(path: Path) -> tuple[str, str]:
    """(format suffix, compression suffix) — e.g. data.jsonl.gz -> (.jsonl, .gz)."""
    s = [x.lower() for x in path.suffixes]
    if s and s[-1] in (".gz", ".zst"):
        return (s[-2] if len(s) > 1 else ""), s[-1]
    return (s[-1] if s else ""), ""


def supported(path: Path) -> bool:
    fmt, comp = _suffixes(path)
    return fmt in TEXT_SUFFIXES | JSONL_SUFFIXES | WARC_SUFFIXES | {".parquet"} or (fmt == "" and comp == "")


class _ZstdFrames(io.RawIOBase):
    """The frames of a zstd file one after another. A file cut short is an EOFError, as gzip's:
    zstandard's own stream reader returns end-of-file there, which would lose the rest silently."""

    def __init__(self, f):
        import zstandard

        self._dctx, self._error = zstandard.ZstdDecompressor(), zstandard.ZstdError
        self._f = f
        self._frame = None  # the frame being decoded; None between frames
        self._out = b""

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._f.close()
        super().close()

    def _feed(self, data: bytes) -> bytes:
        out = []
        try:
            while data:
                if self._frame is None:
                    self._frame = self._dctx.decompressobj()
                out.append(self._frame.decompress(data))
                if not self._frame.eof:
                    break
                data, self._frame = self._frame.unused_data, None
        except self._error as err:
            raise OSError(f"not a valid zstd stream: {err}") from None
        return b"".join(out)

    def readinto(self, buffer) -> int:
        while not self._out:
            data = self._f.read(1 << 16)
            if not data:
                if self._frame is not None:
                    raise EOFError("zstd stream ended before the end of its frame (the file is truncated)")
                return 0
            self._out = self._feed(data)
        n = min(len(buffer), len(self._out))
        buffer[:n], self._out = self._out[:n], self._out[n:]
        return n


def _open_binary(path: Path):
    _, comp = _suffixes(path)
    if comp == ".gz":
        return gzip.open(path, "rb")
    if comp == ".zst":
        return io.BufferedReader(_ZstdFrames(open(path, "rb")))
    return open(path, "rb")


def _broken(where: str, err: Exception) -> Record:
    """The rest of a file that cannot be read (truncated archive, corrupt stream...)."""
    return Record(where, reason="unreadable", meta={"error": f"{type(err).__name__}: {err}"[:500]})


def user_id(value) -> tuple[str | None, str | None]:
    """(id, problem): strings are kept as they are, integers written in decimal, null means none."""
    if value is None:
        return None, None
    if isinstance(value, str) and value:
        return value, None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value), None
    return None, f"id {value!r:.80} is a {type(value).__name__}; ids are non-empty strings or integers"


def _too_long(where: str, size: int, head: bytes) -> Record:
    return Record(where, reason="too_long", raw=head[:RAW_CHARS].decode("utf-8", "replace"), meta={"bytes": size})


def read_text_file(path: Path, name: str, max_bytes: int) -> Iterator[Record]:
    try:
        with _open_binary(path) as f:
            data = f.read(max_bytes * SCAN_FACTOR + 1)
            if len(data) > max_bytes * SCAN_FACTOR:
                size = len(data) + sum(len(b) for b in iter(lambda: f.read(1 << 20), b""))
                yield _too_long(name, size, data)
                return
    except (OSError, EOFError, ValueError) as err:
        yield _broken(name, err)
        return
    try:
        yield Record(name, data.decode("utf-8"), meta={"file": name})
    except UnicodeDecodeError as err:
        yield Record(name, reason="not_utf8", raw=data[:RAW_CHARS].decode("utf-8", "replace"),
                     meta={"error": f"byte {err.start}: {err.reason}"})


def _lines(f, limit: int) -> Iterator[tuple[bytes, int]]:
    """(line, its full length) per line; a line over ``limit`` bytes comes back cut to ``limit``
    and its remainder is skipped without being held in memory."""
    while True:
        line = f.readline(limit + 1)
        if not line:
            return
        size = len(line)
        if size > limit and not line.endswith(b"\n"):
            while True:
                rest = f.readline(1 << 20)
                size += len(rest)
                if not rest or rest.endswith(b"\n"):
                    break
        yield line, size


def _jsonl_record(where: str, line: bytes, text_key: str, id_key: str) -> Record | None:
    try:
        line = line.decode("utf-8")
    except UnicodeDecodeError as err:
        return Record(where, reason="not_utf8", raw=line[:RAW_CHARS].decode("utf-8", "replace"),
                      meta={"error": f"byte {err.start}: {err.reason}"})
    if not line.strip():
        return None
    try:
        obj = json.loads(line)
    except (json.JSONDecodeError, RecursionError) as err:
        return Record(where, reason="malformed_json", raw=line[:RAW_CHARS], meta={"error": str(err)[:500]})
    if not isinstance(obj, dict) or not isinstance(obj.get(text_key), str):
        found = type(obj.get(text_key)).__name__ if isinstance(obj, dict) and text_key in obj else "none"
        return Record(where, reason="missing_text_field", raw=line[:RAW_CHARS],
                      meta={"error": f"no string field {text_key!r} (found: {found})"})
    doc_id, problem = user_id(obj.get(id_key))
    if problem:
        return Record(where, reason="bad_id", raw=line[:RAW_CHARS], meta={"error": problem})
    meta = {k: v for k, v in obj.items() if k not in (text_key, id_key)}
    return Record(where, obj[text_key], meta=meta, id=doc_id)


def read_jsonl(path: Path, name: str, text_key: str, id_key: str, max_bytes: int) -> Iterator[Record]:
    lineno = 0
    try:
        with _open_binary(path) as f:
            for lineno, (line, size) in enumerate(_lines(f, max_bytes * SCAN_FACTOR), 1):
                if size > max_bytes * SCAN_FACTOR:
                    yield _too_long(f"{name}:{lineno}", size, line)
                    continue
                rec = _jsonl_record(f"{name}:{lineno}", line, text_key, id_key)
                if rec is not None:
                    yield rec
    except (OSError, EOFError, ValueError) as err:  # gzip/zstd streams that break mid-way
        yield _broken(f"{name}:{lineno + 1}", err)


def _parquet_row(where: str, row: dict, text_key: str, id_key: str) -> Record:
    text = row.pop(text_key, None)
    doc_id, problem = user_id(row.pop(id_key, None))
    # meta is stored as JSON: bytes, dates and decimals become their text.
    row = json.loads(json.dumps(row, ensure_ascii=False, default=str))
    meta = row.pop("meta", None)
    if isinstance(meta, str):  # our own shards keep meta as a JSON string
        try:
            loaded = json.loads(meta)
            row.update(loaded if isinstance(loaded, dict) else {"meta": loaded})
        except json.JSONDecodeError:
            row["meta"] = meta
    elif meta is not None:
        row["meta"] = meta
    raw = json.dumps({text_key: text, **row}, ensure_ascii=False, default=str)[:RAW_CHARS]
    if problem:
        return Record(where, reason="bad_id", raw=raw, meta={"error": problem})
    if not isinstance(text, str):
        return Record(where, reason="missing_text_field", raw=raw,
                      meta={"error": f"column {text_key!r} is {type(text).__name__}, not a string"})
    return Record(where, text, meta=row, id=doc_id)


def read_parquet(path: Path, name: str, text_key: str, id_key: str) -> Iterator[Record]:
    import pyarrow.parquet as pq

    row = 0
    try:
        pf = pq.ParquetFile(path)
        columns = pf.schema_arrow.names
        for batch in pf.iter_batches():
            for values in batch.to_pylist():
                row += 1
                where = f"{name}:row{row}"
                if text_key not in columns:
                    raw = json.dumps(values, ensure_ascii=False, default=str)[:RAW_CHARS]
                    yield Record(where, reason="missing_text_field", raw=raw,
                                 meta={"error": f"no column {text_key!r} (columns: {columns}); set collect.text_key"})
                    continue
                yield _parquet_row(where, values, text_key, id_key)
    except (OSError, ValueError, EOFError) as err:  # pyarrow's errors derive from these
        yield _broken(f"{name}:row{row + 1}", err)


def _warc_record(rec, where: str) -> Record:
    import trafilatura

    url = rec.rec_headers.get_header("WARC-Target-URI")
    doc_id = rec.rec_headers.get_header("WARC-Record-ID")
    ctype = (rec.http_headers.get_header("Content-Type") or "") if rec.http_headers else ""
    if "html" not in ctype.lower():
        return Record(where, reason="not_html", meta={"url": url, "content_type": ctype}, id=doc_id)
    html = rec.content_stream().read()
    text = trafilatura.extract(html, url=url, include_comments=False)
    if not text:
        return Record(where, reason="no_extractable_text", meta={"url": url}, id=doc_id)
    return Record(where, text, meta={"url": url}, id=doc_id)


def read_warc(path: Path, name: str) -> Iterator[Record]:
    """HTML responses of a WARC file, turned into text by trafilatura.

    A .warc.gz is decompressed before warcio sees it, so a file gzipped as one member (not
    record by record, which warcio alone refuses) reads as well as a standard one.
    """
    from warcio.archiveiterator import ArchiveIterator

    i = 0
    try:
        with _open_binary(path) as f:
            for i, rec in enumerate(ArchiveIterator(f)):
                if rec.rec_type == "response":
                    yield _warc_record(rec, f"{name}#{i}")
    # warcio and trafilatura parse untrusted bytes and fail in many ways (ArchiveLoadFailed,
    # and on some broken headers AttributeError or ValueError): the rest of the file is set aside.
    except Exception as err:
        yield _broken(f"{name}#{i}", err)


def read_file(path: Path, name: str | None = None, text_key: str = "text", id_key: str = "id",
              max_bytes: int = 2_000_000) -> Iterator[Record]:
    """Records of one file; ``name`` is how records name it (default: the file name)."""
    name = name or path.name
    fmt, _ = _suffixes(path)
    if fmt in JSONL_SUFFIXES:
        return read_jsonl(path, name, text_key, id_key, max_bytes)
    if fmt == ".parquet":
        return read_parquet(path, name, text_key, id_key)
    if fmt in WARC_SUFFIXES:
        return read_warc(path, name)
    return read_text_file(path, name, max_bytes)


def root(spec: str) -> Path:
    """The folder a source's files are named relative to: a directory itself, a file's folder,
    or a glob's folder before its first wildcard."""
    if any(ch in spec for ch in "*?["):
        parts = Path(spec).parts
        fixed = [p for p in parts[:next(i for i, p in enumerate(parts) if any(c in p for c in "*?["))]]
        return Path(*fixed) if fixed else Path(".")
    path = Path(spec)
    return path if path.is_dir() else path.parent


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
