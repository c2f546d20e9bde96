"""The shard function: every rule in order on every document; the first failure drops it."""
from __future__ import annotations

import json
from collections import Counter
from fnmatch import fnmatchcase

from pipeline.filter import c4, fineweb, gopher, language, toxicity
from pipeline.filter.text import TextView


def _applies(group, source: str) -> bool:
    return group.enabled and not any(fnmatchcase(source, g) for g in group.skip_sources)


class _Tally:
    """Per-source and per-reason counters, merged across shards by map_shards."""

    def __init__(self):
        self.c = {k: Counter() for k in ("bytes_dropped", "source_docs_in", "source_docs_kept",
                                         "source_bytes_in", "source_bytes_kept", "source_dropped",
                                         "languages", "rules_applied")}
        self.c4_lines_removed = 0

    def applied(self, rule):
        self.c["rules_applied"][rule] += 1

    def seen(self, row, nbytes):
        self.c["source_docs_in"][row["source"]] += 1
        self.c["source_bytes_in"][row["source"]] += nbytes

    def drop(self, row, reason, nbytes):
        self.c["bytes_dropped"][reason] += nbytes
        self.c["source_dropped"][f"{row['source']}|{reason}"] += 1

    def keep(self, row):
        self.c["source_docs_kept"][row["source"]] += 1
        self.c["source_bytes_kept"][row["source"]] += len(row["text"].encode("utf-8"))

    def extra(self) -> dict:
        return {**{k: dict(v) for k, v in self.c.items()}, "c4_lines_removed": self.c4_lines_removed}


def _with_meta(row: dict, **fields) -> dict:
    meta = json.loads(row.get("meta") or "{}")
    meta.update(fields)
    return {**row, "meta": json.dumps(meta, ensure_ascii=False)}


def judge(row: dict, cfg, tally: _Tally | None = None) -> tuple[dict, str | None]:
    """(the row, possibly rewritten by C4 and tagged with its language; reason or None)."""
    tally = tally or _Tally()
    text, source = row["text"], row["source"]
    if not text or not text.strip():
        return row, "empty"
    v = TextView(text)
    if _applies(cfg.language, source):
        lang, score = language.identify(text, cfg.language.max_chars)
        row = _with_meta(row, lang=lang, lang_score=round(score, 4))
        reason = language.check(lang, score, cfg.language)
        if reason:
            return row, f"language.{reason}"
        tally.c["languages"][lang] += 1
    # FineWeb's order is repetition, quality, C4. Here the cheap rules go first (quality,
    # then C4, which drops a third of web-like text) and repetition last, on the text as it
    # came in, as in FineWeb: the same documents survive, only the named reason of one that
    # fails several rules can differ, and the costly n-gram counts run on fewer documents.
    original = v
    if _applies(cfg.gopher_quality, source):
        tally.applied("gopher_quality")
        reason = gopher.check_quality(v, cfg.gopher_quality)
        if reason:
            return row, f"gopher_quality.{reason}"
    cleaned = None
    if _applies(cfg.c4, source):
        tally.applied("c4")
        reason, cleaned, removed = c4.check(v, cfg.c4)
        if reason:
            return row, f"c4.{reason}"
    if _applies(cfg.gopher_repetition, source):
        tally.applied("gopher_repetition")
        reason = gopher.check_repetition(original, cfg.gopher_repetition)
        if reason:
            return row, f"gopher_repetition.{reason}"
    if cleaned is not None and cfg.c4.remove_lines and cleaned != text:
        tally.c4_lines_removed += removed
        row = {**row, "text": cleaned}
        v = TextView(cleaned)
    if _applies(cfg.fineweb, source):
        tally.applied("fineweb")
        reason = fineweb.check(v, cfg.fineweb)
        if reason:
            return row, f"fineweb.{reason}"
    return row, None


def filter_shard(cfg, rows: list[dict]):
    """map_shards' shard function: (kept rows, [(row, reason)], counters)."""
    tally = _Tally()
    kept, kept_bytes, dropped = [], [], []
    for row in rows:
        nbytes = len(row["text"].encode("utf-8")) if row["text"] else 0
        tally.seen(row, nbytes)
        out, reason = judge(row, cfg, tally)
        if reason:
            tally.drop(row, reason, nbytes)
            dropped.append((out, reason))
        else:
            kept.append(out)
            kept_bytes.append(nbytes)
    # The classifier scores a batch at once: it runs last, on the survivors.
    tox = [i for i, r in enumerate(kept) if _applies(cfg.toxicity, r["source"])]
    if tox:
        probs = toxicity.scores([kept[i]["text"] for i in tox], cfg.toxicity.max_chars)
        flagged = set()
        for i, p in zip(tox, probs):
            kept[i] = _with_meta(kept[i], toxicity=round(p, 4))
            if p > cfg.toxicity.threshold:
                flagged.add(i)
                tally.drop(kept[i], "toxicity.threshold", kept_bytes[i])
                dropped.append((kept[i], "toxicity.threshold"))
        kept = [r for i, r in enumerate(kept) if i not in flagged]
    for r in kept:
        tally.keep(r)
    return kept, dropped, tally.extra()
