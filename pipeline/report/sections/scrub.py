"""Scrub: personal data found per type and per source, and scrubbed text around placeholders."""
import re
from collections import defaultdict

from pipeline.core.docs import shard_paths
from pipeline.report.blocks import Heading, Para, Pre, Table

PLACEHOLDER = re.compile(r"<(?:EMAIL|PHONE|CREDIT_CARD|IBAN|IP_ADDRESS|US_SSN|SECRET)(?:_\d+)?>")


def _snippets(d, limit: int) -> list[str]:
    """Scrubbed text around placeholders: what the model will see (the report shows no PII)."""
    import pyarrow.parquet as pq

    out, seen = [], set()
    for path in shard_paths(d):
        for row in pq.read_table(path, columns=["id", "text"]).to_pylist():
            for m in PLACEHOLDER.finditer(row["text"]):
                kind = re.sub(r"_\d+$", "", m.group()[1:-1])
                if kind in seen:
                    continue
                seen.add(kind)
                text = " ".join(row["text"][max(0, m.start() - 120):m.end() + 120].split())
                out.append(f"[{kind}] {row['id']}\n… {text} …")
            if len(out) >= limit:
                return out
    return out


def render(ctx):
    blocks = []
    for label, d in ctx.stage_dirs("scrub"):
        s = ctx.stats(d)
        if "pii" not in s:
            continue
        pii = s["pii"]
        by_source = defaultdict(dict)
        for k, v in s.get("pii_by_source", {}).items():
            src, kind = k.split("|", 1)
            by_source[src][kind] = v
        kinds = sorted(pii, key=lambda k: -pii[k])
        blocks += [
            Heading(f"Personal data ({label}, key {d.name})"),
            Para(f"{s.get('docs_with_pii', 0):,} of {s['docs_in']:,} documents held personal data; "
                 f"{sum(pii.values()):,} spans were replaced. Each type has a validator (phonenumbers, Luhn, "
                 f"mod-97, public IP ranges, SSN ranges, secret formats): see pipeline/core/pii/detect.py. "
                 f"Dropped: {s.get('dropped') or 'none'}."),
            Table(["type", "replaced"], [[k, pii[k]] for k in kinds] or [["(none)", 0]]),
        ]
        if by_source:
            blocks.append(Table(["source", "documents with PII", *kinds],
                                [[src, s.get("docs_with_pii_by_source", {}).get(src, 0), *[by_source[src].get(k, 0) for k in kinds]]
                                 for src in sorted(by_source)]))
        snippets = _snippets(d, 8)
        if snippets:
            blocks.append(Heading("Scrubbed text, one example per type", 3))
            blocks += [Pre(t) for t in snippets]
    return blocks
