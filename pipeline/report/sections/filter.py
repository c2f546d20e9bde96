"""Filter: documents and bytes dropped per rule, the effect on each source, examples per rule."""
from collections import defaultdict

import pyarrow.parquet as pq

from pipeline.core.pii import redacted
from pipeline.report.blocks import Heading, Para, Pre, Table, figure


def _examples(d, per_rule: int) -> dict:
    """A few dropped documents per reason, read from the stage's dropped/ shards."""
    out = defaultdict(list)
    for path in sorted((d / "dropped").glob("shard-*.parquet")):
        for row in pq.read_table(path, columns=["id", "source", "text", "reason"]).to_pylist():
            if len(out[row["reason"]]) < per_rule:
                out[row["reason"]].append(row)
    return out


def _chart(s: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources = list(s["source_docs_in"])
    kept = [s["source_docs_kept"].get(x, 0) / s["source_docs_in"][x] for x in sources]
    kept_b = [s["source_bytes_kept"].get(x, 0) / max(s["source_bytes_in"][x], 1) for x in sources]
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(sources) + 1.2))
    y = range(len(sources))
    ax.barh([i - 0.2 for i in y], kept, height=0.4, label="documents kept", color="#4c72b0")
    ax.barh([i + 0.2 for i in y], kept_b, height=0.4, label="bytes kept", color="#dd8452")
    ax.set_yticks(list(y), sources)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share kept by the filter")
    ax.legend(loc="lower right")
    return fig


def render(ctx):
    blocks = []
    for label, d in ctx.stage_dirs("filter"):
        s = ctx.stats(d)
        if "source_docs_in" not in s:
            continue
        n_in, b_in = s["docs_in"], max(s["bytes_in"], 1)
        dropped, bytes_dropped = s.get("dropped", {}), s.get("bytes_dropped", {})
        rows = [[reason, n, round(100 * n / max(n_in, 1), 2), bytes_dropped.get(reason, 0), round(100 * bytes_dropped.get(reason, 0) / b_in, 2)]
                for reason, n in sorted(dropped.items(), key=lambda kv: -kv[1])]
        c4_bytes = s["bytes_in"] - s["bytes_kept"] - sum(bytes_dropped.values())
        blocks += [
            Heading(f"Filter ({label}, key {d.name})"),
            Para(f"{s['docs_kept']:,} of {n_in:,} documents kept ({100 * s['docs_kept'] / max(n_in, 1):.1f}%), "
                 f"{s['bytes_kept'] / 1e6:.2f} of {s['bytes_in'] / 1e6:.2f} MB. Each dropped document is counted "
                 f"under the first rule it failed (<group>.<config key>). C4's line rules removed "
                 f"{s.get('c4_lines_removed', 0):,} lines ({max(c4_bytes, 0) / 1e6:.2f} MB) from pages that were kept."),
            Table(["rule", "documents", "% of docs", "bytes", "% of bytes"], rows or [["(none)", 0, 0, 0, 0]]),
            Heading("Per source", 3),
            Para("Rule groups skip sources by config (`skip_sources`): by default code is exempt from the prose "
                 "rules and books from C4's and FineWeb's line rules, so verse and source code are not dropped "
                 "wholesale."),
        ]
        by_source = defaultdict(dict)
        for k, v in s.get("source_dropped", {}).items():
            src, reason = k.split("|", 1)
            by_source[src][reason] = v
        blocks.append(Table(
            ["source", "docs in", "kept", "% kept", "% bytes kept", "top drop reasons"],
            [[src, n, s["source_docs_kept"].get(src, 0), round(100 * s["source_docs_kept"].get(src, 0) / n, 1),
              round(100 * s["source_bytes_kept"].get(src, 0) / max(s["source_bytes_in"][src], 1), 1),
              ", ".join(f"{r}: {c}" for r, c in sorted(by_source[src].items(), key=lambda kv: -kv[1])[:3]) or "-"]
             for src, n in s["source_docs_in"].items()]))
        blocks.append(figure(_chart(s), "Share of each source kept by the filter", f"filter-{d.name}.png"))
        examples = _examples(d, ctx.cfg.examples_per_reason)
        if examples:
            blocks.append(Heading("Examples per rule", 3))
            for reason in [r[0] for r in rows]:
                for row in examples.get(reason, []):
                    text = " ".join(redacted(row["text"])[:300].split())
                    blocks.append(Pre(f"[{reason}] {row['id']} ({row['source']})\n{text}"))
    return blocks
