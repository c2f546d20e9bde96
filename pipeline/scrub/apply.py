"""The shard function: find, replace, count; drop documents left with nothing but placeholders."""
from __future__ import annotations

import json
import re
from collections import Counter
from fnmatch import fnmatchcase

from pipeline.scrub.detect import find
from pipeline.scrub.replace import replace

# Field labels that may stand next to the values in an address list or a form.
_LABELS = re.compile(r"(?i)\b(?:e-?mail|mail|tel|telephone|phone|fax|mobile|cell|ip|ssn|iban|card|cc|password|token"
                     r"|key|secret|contact|from|to|name|address|no|nr|number)\b|[\W_\d]+")


def _only_pii(text: str, spans) -> bool:
    """Nothing but PII and field labels: no word of content is left once both are gone."""
    pos, rest = 0, []
    for s in spans:
        rest.append(text[pos:s.start])
        pos = s.end
    rest.append(text[pos:])
    return not _LABELS.sub("", "".join(rest)).strip()


# Replacing a span can unglue its neighbour: in "jo@mail.com(415) 555-0134" the phone is glued
# to the address (a letter before it) until the address is a placeholder. Detection runs again
# on its own output until it finds nothing; real text settles in two passes.
MAX_PASSES = 4


def scrub_passes(text: str, cfg) -> tuple[str, list[list]]:
    """(scrubbed text, the spans of each pass, each in the text that pass read)."""
    kinds, regions = frozenset(cfg.types), tuple(cfg.phone_regions)
    passes, state = [], {}
    for _ in range(MAX_PASSES):
        # What scrub itself wrote is no one's data, nor is anything read into it: the digits of
        # an IP pseudonym ("2001:db8::1") glued to a number before it are not a phone.
        ours = state.get("written", [])
        spans = [s for s in find(text, kinds, regions) if not any(a < s.end and s.start < b for a, b in ours)]
        if not spans:
            break
        passes.append(spans)
        text = replace(text, spans, cfg.replacement, state)
    return text, passes


def scrub_text(text: str, cfg) -> tuple[str, list]:
    """(scrubbed text, spans found) for one text with the stage's config; spans after the
    first pass are positions in that pass's text."""
    out, passes = scrub_passes(text, cfg)
    return out, [s for spans in passes for s in spans]


def scrub_shard(cfg, rows: list[dict]):
    """map_shards' shard function: (kept rows, [(row, reason)], counters)."""
    kept, dropped = [], []
    counts = {"pii": Counter(), "pii_by_source": Counter(), "docs_with_pii_by_source": Counter()}
    docs_with_pii = 0
    for row in rows:
        text = row["text"]
        if not text or not text.strip():
            dropped.append((row, "empty"))
            continue
        if any(fnmatchcase(row["source"], g) for g in cfg.skip_sources):
            kept.append(row)
            continue
        new, passes = scrub_passes(text, cfg)
        if not passes:
            kept.append(row)
            continue
        spans = [s for found in passes for s in found]
        docs_with_pii += 1
        found = Counter(s.kind for s in spans)
        counts["pii"].update(found)
        counts["pii_by_source"].update({f"{row['source']}|{k}": v for k, v in found.items()})
        counts["docs_with_pii_by_source"][row["source"]] += 1
        meta = json.loads(row["meta"] or "{}")
        meta["pii"] = dict(found)
        out = {**row, "text": new, "meta": json.dumps(meta, ensure_ascii=False)}
        if cfg.drop_only_pii and _only_pii(text, passes[0]):
            dropped.append((out, "only_pii"))  # the scrubbed text: dropped/ holds no PII either
        else:
            kept.append(out)
    return kept, dropped, {**{k: dict(v) for k, v in counts.items()}, "docs_with_pii": docs_with_pii}
