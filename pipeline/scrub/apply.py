"""The shard function: find, replace, count; drop documents left with nothing but placeholders."""
from __future__ import annotations

import json
import re
from collections import Counter
from fnmatch import fnmatchcase

from pipeline.core.pii.detect import find
from pipeline.core.pii.replace import replace

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


def scrub_text(text: str, cfg) -> tuple[str, list]:
    """(scrubbed text, spans found) for one text with the stage's config."""
    spans = find(text, frozenset(cfg.types), tuple(cfg.phone_regions))
    return replace(text, spans, cfg.replacement), spans


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
        new, spans = scrub_text(text, cfg)
        if not spans:
            kept.append(row)
            continue
        docs_with_pii += 1
        found = Counter(s.kind for s in spans)
        counts["pii"].update(found)
        counts["pii_by_source"].update({f"{row['source']}|{k}": v for k, v in found.items()})
        counts["docs_with_pii_by_source"][row["source"]] += 1
        meta = json.loads(row["meta"] or "{}")
        meta["pii"] = dict(found)
        out = {**row, "text": new, "meta": json.dumps(meta, ensure_ascii=False)}
        if cfg.drop_only_pii and _only_pii(text, spans):
            dropped.append((out, "only_pii"))  # the scrubbed text: dropped/ holds no PII either
        else:
            kept.append(out)
    return kept, dropped, {**{k: dict(v) for k, v in counts.items()}, "docs_with_pii": docs_with_pii}
