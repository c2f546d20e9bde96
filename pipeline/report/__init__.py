"""report: one page (index.html, self-contained, and report.md) over every step of every point.

Each section is a module in ``pipeline/report/sections/``; it returns blocks (headings,
paragraphs, tables, figures) or nothing when its steps have not run. ``SECTIONS`` fixes the
order of the sections written so far; a new module there (a new stage's) is picked up by
itself and placed after them, so adding a stage never touches this file.

Usage:  python -m pipeline report --manifest results/.plan/points-<hash>.json --out results/report
"""
from __future__ import annotations

import argparse
import importlib
import json
from dataclasses import dataclass
from pathlib import Path

from pipeline.report.blocks import Context, render_html, render_markdown, write_figures

SECTIONS = [
    "pipeline.report.sections.overview",
    "pipeline.report.sections.funnel",
    "pipeline.report.sections.sources",
    "pipeline.report.sections.filter",
    "pipeline.report.sections.dedup",
    "pipeline.report.sections.scrub",
    "pipeline.report.sections.tokenizer",
    "pipeline.report.sections.training",
    "pipeline.report.sections.evaluation",
    "pipeline.report.sections.eval_contamination",
    "pipeline.report.sections.eval_canaries",
    "pipeline.report.sections.sweep_comparison",
]


def section_modules() -> list[str]:
    """SECTIONS in their order, then any other section module (sorted), the comparison last."""
    found = sorted(f"pipeline.report.sections.{p.stem}" for p in (Path(__file__).parent / "sections").glob("*.py")
                   if p.stem != "__init__")
    last = "pipeline.report.sections.sweep_comparison"
    return [s for s in SECTIONS if s != last] + [s for s in found if s not in SECTIONS] + [last]


@dataclass
class Config:
    title: str = "lmdag report"
    examples_per_reason: int = 3


def build(manifest: Path, out: Path, cfg: Config) -> list[Path]:
    points = json.loads(Path(manifest).read_text())["points"]
    results = Path(manifest).resolve().parents[1]
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(points=points, results=results, out=out, cfg=cfg)
    blocks = []
    for name in section_modules():
        blocks += importlib.import_module(name).render(ctx) or []
    write_figures(blocks, out)
    html, md = out / "index.html", out / "report.md"
    tmp_html, tmp_md = out / ".index.html.tmp", out / ".report.md.tmp"
    tmp_html.write_text(render_html(cfg.title, blocks), encoding="utf-8")
    tmp_md.write_text(render_markdown(cfg.title, blocks), encoding="utf-8")
    tmp_html.replace(html)
    tmp_md.replace(md)
    return [html, md]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", required=True, help="results/.plan/points-<hash>.json, written when Snakemake plans the DAG")
    parser.add_argument("--out", default="results/report", help="output directory")
    parser.add_argument("overrides", nargs="*", help="report settings over the planned ones, e.g. title='My run'")
    args = parser.parse_args(argv)
    from omegaconf import OmegaConf

    from pipeline.core.step import typed_config

    # The report's config was resolved when the DAG was planned (it is in the manifest).
    planned = json.loads(Path(args.manifest).read_text()).get("report", {})
    cli = OmegaConf.to_container(OmegaConf.from_dotlist([o.removeprefix("report.") for o in args.overrides]))
    cfg = typed_config(Config, {**planned, **cli})
    for path in build(Path(args.manifest), Path(args.out), cfg):
        print(f"report: {path}")
    return 0
