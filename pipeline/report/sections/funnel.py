"""The data funnel: for every stage, documents in, kept, and dropped per named reason."""
from pipeline.report.blocks import Heading, Para, Table
from pipeline.stage import STAGES


def render(ctx):
    rows = []
    for stage in STAGES:
        for point, d in ctx.stage_dirs(stage):
            s = ctx.stats(d)
            if "docs_in" not in s:
                continue
            dropped = s.get("dropped", {})
            ok = s["docs_in"] == s["docs_kept"] + sum(dropped.values())
            reasons = ", ".join(f"{k}: {v:,}" for k, v in sorted(dropped.items(), key=lambda kv: -kv[1])) or "-"
            rows.append([stage, d.name, point, s["docs_in"], s["docs_kept"], sum(dropped.values()),
                         reasons, s.get("bytes_kept", ""), round(s.get("wall_s", 0), 1), "yes" if ok else "NO"])
    if not rows:
        return []
    return [
        Heading("Data funnel"),
        Para("Every document that enters a data stage leaves it kept or dropped with a named reason: "
             "in = kept + dropped holds for each row (last column)."),
        Table(["stage", "key", "point", "docs in", "kept", "dropped", "drop reasons", "bytes kept",
               "wall s", "in = kept + dropped"], rows),
    ]
