"""Report building blocks, rendered both to self-contained HTML and to Markdown."""
from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Context:
    points: list[dict]  # the plan's manifest: [{name, overrides, steps: {step: {stage, key, inputs}}}]
    results: Path
    out: Path
    cfg: Any

    def steps(self, stage: str | None = None) -> list[tuple[dict, str, dict]]:
        """(point, step name, step entry) of every point, in DAG order; only ``stage``'s if given."""
        return [(p, name, s) for p in self.points for name, s in p["steps"].items()
                if stage is None or s["stage"] == stage]

    def stage_dirs(self, stage: str) -> list[tuple[str, Path]]:
        """(label, directory) of every finished step of ``stage``, each directory once; the
        label names the step, and the point when the plan has several."""
        seen, found = set(), []
        for p, name, s in self.steps(stage):
            d = self.results / name / s["key"]
            if (d / "stats.json").is_file() and d not in seen:
                seen.add(d)
                found.append((name if len(self.points) == 1 else f"{name}, point {p['name']}", d))
        return found

    def stats(self, directory: Path) -> dict:
        return json.loads((directory / "stats.json").read_text())

    def input_dir(self, directory: Path, role: str) -> Path | None:
        """The directory a finished step read as ``role`` (stats.json records "<step>/<key>")."""
        ref = self.stats(directory).get("inputs", {}).get(role)
        return self.results / ref if ref else None


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Any]]


@dataclass
class Pre:
    text: str


@dataclass
class Figure:
    png: bytes
    caption: str
    name: str  # file name written next to report.md


def figure(fig, caption: str, name: str) -> Figure:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return Figure(buf.getvalue(), caption, name)


def fmt(v: Any) -> str:
    if v is None:  # a step that did not measure this (a table of several steps): a dash, as evaluation's cells
        return "-"
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def render_markdown(title: str, blocks: list) -> str:
    lines = [f"# {title}", ""]
    for b in blocks:
        if isinstance(b, Heading):
            lines += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Para):
            lines += [b.text, ""]
        elif isinstance(b, Pre):
            lines += ["```", b.text, "```", ""]
        elif isinstance(b, Table):
            lines.append("| " + " | ".join(b.headers) + " |")
            lines.append("|" + "---|" * len(b.headers))
            for r in b.rows:
                lines.append("| " + " | ".join(fmt(c).replace("|", "\\|").replace("\n", " ") for c in r) + " |")
            lines.append("")
        elif isinstance(b, Figure):
            lines += [f"![{b.caption}]({b.name})", ""]
    return "\n".join(lines)


CSS = """body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
td:first-child,th:first-child{text-align:left}pre{background:#f6f6f6;padding:.8em;white-space:pre-wrap;font-size:.85em}
img{max-width:100%}figcaption{color:#555;font-size:.9em}"""


def render_html(title: str, blocks: list) -> str:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>{CSS}</style></head><body><h1>{e(title)}</h1>"]
    for b in blocks:
        if isinstance(b, Heading):
            parts.append(f"<h{b.level}>{e(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            parts.append(f"<p>{e(b.text)}</p>")
        elif isinstance(b, Pre):
            parts.append(f"<pre>{e(b.text)}</pre>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{e(h)}</th>" for h in b.headers)
            body = "".join("<tr>" + "".join(f"<td>{e(fmt(c))}</td>" for c in r) + "</tr>" for r in b.rows)
            parts.append(f"<table><tr>{head}</tr>{body}</table>")
        elif isinstance(b, Figure):
            data = base64.b64encode(b.png).decode()
            parts.append(f"<figure><img alt='{e(b.caption)}' src='data:image/png;base64,{data}'><figcaption>{e(b.caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_figures(blocks: list, out: Path) -> None:
    for b in blocks:
        if isinstance(b, Figure):
            (out / b.name).write_bytes(b.png)
