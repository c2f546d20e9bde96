"""Scrubbed values never reach a log, stats.json, config or the terminal: planted PII goes
through filter, dedup and scrub on the command line, then every file that is not a document
shard of a stage before scrub is searched for it."""
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROSE = ("The committee met on a grey morning to review the harbour plans, and after a long discussion "
         "about the tides, the cost of the new wall and the needs of the fishing families, it agreed to "
         "publish the full report next month so that everyone in the town could read it. ")
PII = ["jane.roe@mail.ucsc.edu", "(415) 555-0134", "4111 1111 1111 1111", "93.184.216.34", "+44 20 7946 0958",
       "bob.k@cs.cmu.edu"]


def cli(*args):
    proc = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_planted_pii_reaches_no_log_stats_config_or_terminal(tmp_path):
    rng = random.Random(0)
    words = PROSE.replace(",", "").replace(".", "").split()

    def prose() -> str:  # distinct documents: dedup keeps them all
        return " ".join(" ".join(rng.sample(words, 12)).capitalize() + "." for _ in range(12))

    rows = [{"id": f"doc-{i}", "text": f"{prose()} Contact {value} for the minutes of meeting {i}. {prose()}"}
            for i, value in enumerate(PII * 3)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    said = cli("filter", f"in={tmp_path / 'in.jsonl'}", f"out={tmp_path / 'filter'}")
    said += cli("dedup", f"in={tmp_path / 'filter'}", f"out={tmp_path / 'dedup'}")
    said += cli("scrub", f"in={tmp_path / 'dedup'}", f"out={tmp_path / 'scrub'}")
    stats = json.loads((tmp_path / "scrub/stats.json").read_text())
    assert stats["docs_kept"] >= len(PII) and sum(stats["pii"].values()) >= len(PII), stats
    searched = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "in.jsonl"
                and not (p.suffix == ".parquet" and p.relative_to(tmp_path).parts[0] in ("filter", "dedup"))]
    # (the shards before scrub hold the text as it came: what scrub is for)
    assert any(p.name == "log.txt" for p in searched) and any(p.parent.name == "scrub" for p in searched)
    for path in searched:
        data = path.read_bytes().decode("utf-8", errors="replace")
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            data = json.dumps(pq.read_table(path).to_pylist(), default=str)
        leaked = [v for v in PII if v in data]
        assert not leaked, f"{path} holds {leaked}"
    assert not [v for v in PII if v in said]  # nor the terminal
