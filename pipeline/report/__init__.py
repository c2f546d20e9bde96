"""report: one page (index.html, self-contained, and report.md) over every stage of every point.

Each section is a module in ``pipeline/report/sections/`` listed in ``SECTIONS``; it returns
blocks (headings, paragraphs, tables, figures) or nothing when its stage has not run.
Later stages add a section without touching the others.

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


@dataclass
class Config:
    title: str = "lmdag report"
    examples_per_reason: int = 3


def build(manifest: Path, out: Path, cfg: Config) -> list[Path]:
    points = json.loads(Path(manifest).read_text())
    results = Path(manifest).resolve().parents[1]
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(points=points, results=results, out=out, cfg=cfg)
    blocks = []
    for name in SECTIONS:
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
    parser.add_argument("overrides", nargs="*", help="report.* overrides, e.g. report.title='My run'")
    args = parser.parse_args(argv)
    from omegaconf import OmegaConf

    from pipeline.config import compose, normalize_overrides

    cfg = Config(**OmegaConf.to_container(compose(normalize_overrides(args.overrides, "report")).report, resolve=True))
    for path in build(Path(args.manifest), Path(args.out), cfg):
        print(f"report: {path}")
    return 0
