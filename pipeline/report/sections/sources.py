"""Sources: documents and bytes per source collected, as a table, a bar chart and samples."""
import json

from pipeline.core.pii import redacted
from pipeline.report.blocks import Heading, Pre, Table, figure


def _chart(sources: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(sources)
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.45 * len(names) + 1.2), sharey=True)
    axes[0].barh(names, [sources[n]["documents"] for n in names], color="#4c72b0")
    axes[0].set_xlabel("documents")
    axes[1].barh(names, [sources[n]["bytes"] / 1e6 for n in names], color="#dd8452")
    axes[1].set_xlabel("MB of text")
    axes[0].invert_yaxis()
    fig.suptitle("Collected text per source")
    return fig


def render(ctx):
    blocks = []
    for i, (label, d) in enumerate(ctx.stage_dirs("collect")):
        sources = ctx.stats(d)["sources"]
        blocks += [Heading(f"Sources ({label}, key {d.name})")]
        blocks.append(Table(["source", "documents", "MB", "dropped"],
                            [[n, s["documents"], round(s["bytes"] / 1e6, 3), s["dropped"]] for n, s in sources.items()]
                            + [["total", sum(s["documents"] for s in sources.values()),
                                round(sum(s["bytes"] for s in sources.values()) / 1e6, 3),
                                sum(s["dropped"] for s in sources.values())]]))
        blocks.append(figure(_chart(sources), "Documents and bytes per source", f"sources-{d.name}.png"))
        samples = [json.loads(line) for line in (d / "samples.jsonl").read_text().splitlines() if line]
        shown = {}
        for s in samples:
            if s["source"] not in shown:
                shown[s["source"]] = s
        blocks.append(Heading("A sample of each source (personal data replaced as scrub replaces it)", 3))
        for source, s in shown.items():
            blocks.append(Pre(f"[{source}] {s['id']}\n{redacted(s['text'])[:400]}"))
    return blocks
