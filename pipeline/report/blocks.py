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
    points: list[dict]  # [{name, overrides, keys: {stage: key}}]
    results: Path
    out: Path
    cfg: Any

    def stage_dirs(self, stage: str) -> list[tuple[str, Path]]:
        """(point name, directory) of a stage for every point where it finished, deduplicated by key."""
        seen, found = set(), []
        for p in self.points:
            key = p["keys"].get(stage)
            d = self.results / stage / key if key else None
            if d is not None and (d / "stats.json").is_file() and key not in seen:
                seen.add(key)
                found.append((p["name"], d))
        return found

    def stats(self, directory: Path) -> dict:
        return json.loads((directory / "stats.json").read_text())


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
