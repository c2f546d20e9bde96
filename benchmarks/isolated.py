"""Run one tool of a benchmark in its own Python process (a large shared heap skews timings)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def run_worker(script: str, tool: str, corpus: Path, n: int) -> dict:
    """``python script --worker tool --corpus corpus --docs n --out FILE``; returns FILE's JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        subprocess.run([sys.executable, script, "--worker", tool, "--corpus", str(corpus), "--docs", str(n),
                        "--out", str(out)], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        return json.loads(out.read_text())
