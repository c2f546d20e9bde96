"""Overview: the sweep points and the stage directory each one uses."""
from pipeline.report.blocks import Heading, Para, Table
from pipeline.stage import STAGES


def render(ctx):
    blocks = [Heading("Run overview")]
    shared = [s for s in STAGES if len({p["keys"][s] for p in ctx.points}) == 1]
    blocks.append(Para(
        f"{len(ctx.points)} point(s). Every stage writes results/<stage>/<key>/; points that agree on "
        f"a stage's config share its directory. Shared by all points: {', '.join(shared) or 'none'}."
    ))
    rows = [[p["name"], " ".join(p["overrides"]) or "(defaults)", *[p["keys"][s] for s in STAGES]] for p in ctx.points]
    blocks.append(Table(["point", "overrides", *STAGES], rows))
    return blocks
