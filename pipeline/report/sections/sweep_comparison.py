"""Sweep comparison: one row per sweep point with its headline evaluation numbers."""
import json

from pipeline.report.blocks import Heading, Para, Table
from pipeline.report.sections.evaluation import main_metric


def render(ctx):
    rows, columns = [], []
    for p in ctx.points:
        key = p["keys"].get("evaluate")
        d = ctx.results / "evaluate" / key if key else None
        if d is None or not (d / "stats.json").is_file():
            continue
        s = json.loads((d / "stats.json").read_text())
        values = {}
        for task, r in s["results"].items():
            m = main_metric(r["metrics"])
            values[f"{task} {m}"] = r["metrics"][m]
        core = (s.get("core") or {}).get("core")
        if core is not None:
            values["CORE"] = core
        columns += [c for c in values if c not in columns]
        rows.append((p["name"], " ".join(p["overrides"]) or "(defaults)", key, values))
    if len(rows) < 2:
        return []
    return [
        Heading("Sweep comparison"),
        Para("Every sweep point's evaluation side by side (acc_norm where reported, else acc; "
             "bits_per_byte and perplexity: lower is better). Points with the same evaluate key share a model."),
        Table(["point", "overrides", "evaluate key", *columns],
              [[n, o, k, *[round(v[c], 4) if c in v else "-" for c in columns]] for n, o, k, v in rows]),
    ]
