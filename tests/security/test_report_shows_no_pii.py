"""The report shows text from steps before scrub (collect's samples, filter's removed examples,
dedup's clusters) as scrub leaves it: planted personal data in those steps' outputs never
reaches a rendered section."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.report.blocks import Context

REPO = Path(__file__).resolve().parents[2]
PII = ["jane.roe@mail.ucsc.edu", "(415) 555-0134", "4111 1111 1111 1111", "93.184.216.34"]
PROSE = ("The committee met on a grey morning to review the harbour plans and after a long discussion about the "
         "tides the cost of the new wall and the needs of the fishing families it agreed to publish the report. ")


def render(section: str, results: Path, step: str, stage: str) -> str:
    import importlib

    points = [{"name": "p", "steps": {step: {"stage": stage, "key": "k", "inputs": {}}}}]
    blocks = importlib.import_module(f"pipeline.report.sections.{section}").render(
        Context(points, results, results / "report", type("Cfg", (), {"examples_per_reason": 5})()))
    return repr(blocks)


def test_collect_samples_are_shown_scrubbed(tmp_path):
    d = tmp_path / "collect" / "k"
    d.mkdir(parents=True)
    (d / "stats.json").write_text(json.dumps({"sources": {"web": {"documents": 1, "bytes": 300, "dropped": 0}}}))
    text = PROSE + " Write to " + ", ".join(PII) + " for the minutes."
    (d / "samples.jsonl").write_text(json.dumps({"source": "web", "id": "w-1", "text": text}) + "\n")
    shown = render("sources", tmp_path, "collect", "collect")
    assert "w-1" in shown and "<EMAIL>" in shown
    assert not [v for v in PII if v in shown]


@pytest.mark.slow
def test_filter_examples_and_dedup_clusters_are_shown_scrubbed(tmp_path):
    rows = [{"id": f"short-{i}", "text": f"Call {v} now."} for i, v in enumerate(PII)]  # too short: filtered
    article = (PROSE + "Fishing boats left the harbour before dawn while gulls circled over the market square. "
               "Teachers at the village school planned a visit to the lighthouse for the older children in spring. "
               "Rain was expected later in the week, so the builders hurried to finish the roof of the new hall. ")
    rows += [{"id": f"dup-{i}", "text": f"{article} Contact {PII[0]} or {PII[1]}."} for i in range(3)]  # duplicates
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for stage, src in (("filter", tmp_path / "in.jsonl"), ("dedup", tmp_path / "filter" / "k")):
        proc = subprocess.run([sys.executable, "-m", "pipeline", stage, f"in={src}", f"out={tmp_path / stage / 'k'}"],
                              cwd=REPO, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
    shown_filter = render("filter", tmp_path, "filter", "filter")
    shown_dedup = render("dedup", tmp_path, "dedup", "dedup")
    assert "short-0" in shown_filter and "dup-" in shown_dedup  # the examples are there...
    assert not [v for v in PII if v in shown_filter + shown_dedup]  # ...without the values
