"""Model comparison: one row per evaluated model (and sweep point) with its headline numbers."""
from pipeline.report.blocks import Heading, Para, Table
from pipeline.report.sections.evaluation import main_metric


def render(ctx):
    rows, columns, seen = [], [], set()
    for p, name, entry in ctx.steps("evaluate"):
        d = ctx.results / name / entry["key"]
        if d in seen or not (d / "stats.json").is_file():
            continue
        seen.add(d)
        s = ctx.stats(d)
        values = {}
        for task, r in s["results"].items():
            m = main_metric(r["metrics"])
            values[f"{task} {m}"] = r["metrics"][m]
        core = (s.get("core") or {}).get("core")
        if core is not None:
            values["CORE"] = core
        columns += [c for c in values if c not in columns]
        rows.append((p["name"], entry["inputs"].get("model", "?"), d.name, values))
    if len(rows) < 2:
        return []
    return [
        Heading("Model comparison"),
        Para("Every evaluated model of every sweep point side by side (acc_norm where reported, else acc; "
             "bits_per_byte and perplexity: lower is better). Rows with the same evaluate key share a result."),
        Table(["point", "model", "evaluate key", *columns],
              [[n, m, k, *[round(v[c], 4) if c in v else "-" for c in columns]] for n, m, k, v in rows]),
    ]
