"""Overview: the DAG's steps (a picture and a table) and, per sweep point, the key each uses."""
from pipeline.report.blocks import Heading, Para, Table, figure


def _depths(steps: dict) -> dict[str, int]:
    depth: dict[str, int] = {}
    for name, s in steps.items():  # the manifest lists inputs before their readers
        depth[name] = 1 + max((depth[i] for i in s["inputs"].values() if i in depth), default=-1)
    return depth


def _dag_chart(steps: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depth = _depths(steps)
    layers: dict[int, list[str]] = {}
    for name in steps:
        layers.setdefault(depth[name], []).append(name)
    pos = {n: (d, -i + (len(ns) - 1) / 2) for d, ns in layers.items() for i, n in enumerate(ns)}
    height = max(len(ns) for ns in layers.values())
    fig, ax = plt.subplots(figsize=(1.9 * len(layers) + 1, 0.7 * height + 1))
    for name, s in steps.items():
        for role, src in s["inputs"].items():
            (x0, y0), (x1, y1) = pos[src], pos[name]
            ax.annotate("", (x1 - 0.32, y1), (x0 + 0.32, y0), arrowprops={"arrowstyle": "->", "color": "#888"})
    for name, (x, y) in pos.items():
        label = name if steps[name]["stage"] == name else f"{name}\n({steps[name]['stage']})"
        ax.text(x, y, label, ha="center", va="center", fontsize=8,
                bbox={"boxstyle": "round", "fc": "#eef3fb", "ec": "#4c72b0"})
    ax.set_xlim(-0.6, len(layers) - 0.4)
    ax.set_ylim(-height / 2 - 0.2, height / 2 + 0.2)
    ax.axis("off")
    return fig


def render(ctx):
    first = ctx.points[0]["steps"]
    blocks = [Heading("Run overview"), Para(
        f"{len(ctx.points)} point(s), {len(first)} steps in the first. Every step writes "
        f"results/<step>/<key>/, key = hash of its stage's code version, its resolved config and its "
        f"inputs' keys; points that agree on a step share its directory.")]
    blocks.append(figure(_dag_chart(first), "The DAG of the first point: each step and what it reads",
                         "dag.png"))
    names = list(dict.fromkeys(n for p in ctx.points for n in p["steps"]))
    rows = []
    for name in names:
        entry = next(p["steps"][name] for p in ctx.points if name in p["steps"])
        keys = [p["steps"].get(name, {}).get("key", "-") for p in ctx.points]
        done = ["" if k == "-" else ("" if (ctx.results / name / k / "stats.json").is_file() else " (not run)")
                for k in keys]
        rows.append([name, entry["stage"], ", ".join(f"{r}={s}" for r, s in entry["inputs"].items()) or "-",
                     *[k + m for k, m in zip(keys, done)], "yes" if len(set(keys)) == 1 else "no"])
    blocks.append(Table(["step", "stage", "inputs", *[f"key: {p['name']}" for p in ctx.points], "shared"], rows))
    if len(ctx.points) > 1:
        blocks.append(Table(["point", "overrides"], [[p["name"], " ".join(p["overrides"]) or "(defaults)"]
                                                      for p in ctx.points]))
    return blocks
