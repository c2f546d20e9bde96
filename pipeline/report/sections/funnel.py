"""The data funnel: for every data step, documents in, kept, and dropped per named reason."""
from pipeline.report.blocks import Heading, Para, Table


def render(ctx):
    rows = []
    stages = list(dict.fromkeys(s["stage"] for _, _, s in ctx.steps()))
    for stage in stages:
        for label, d in ctx.stage_dirs(stage):
            s = ctx.stats(d)
            if "docs_in" not in s:
                continue
            dropped = s.get("dropped", {})
            ok = s["docs_in"] == s["docs_kept"] + sum(dropped.values())
            upstream = ctx.input_dir(d, "docs")
            chained = "-"
            if upstream is not None and (upstream / "stats.json").is_file():
                chained = "yes" if ctx.stats(upstream).get("docs_kept") == s["docs_in"] else "NO"
            reasons = ", ".join(f"{k}: {v:,}" for k, v in sorted(dropped.items(), key=lambda kv: -kv[1])) or "-"
            rows.append([label, d.name, s["docs_in"], s["docs_kept"], sum(dropped.values()), reasons,
                         s.get("bytes_kept", ""), round(s.get("wall_s", 0), 1), "yes" if ok else "NO", chained])
    if not rows:
        return []
    return [
        Heading("Data funnel"),
        Para("Every document that enters a data step leaves it kept or dropped with a named reason: "
             "in = kept + dropped holds for each row, and a step's in equals the kept of the step it reads "
             "(last two columns)."),
        Table(["step", "key", "docs in", "kept", "dropped", "drop reasons", "bytes kept", "wall s",
               "in = kept + dropped", "in = input's kept"], rows),
    ]
