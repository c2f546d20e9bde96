"""Config values and paths reach the shell only as data: a value and a results path made of
shell syntax run the workflow and execute nothing. Values never reach a rule's shell line
(each job reads its plan file); paths do, quoted."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")


@pytest.mark.slow
def test_shell_syntax_in_a_value_and_a_path_is_data(tmp_path):
    value_marker, path_marker = tmp_path / "pwned-by-value", tmp_path / "pwned-by-path"
    # (no " #": Snakemake reads --config values as YAML, where it starts a comment)
    value = f"; touch {value_marker}; `touch {value_marker}`"
    results = tmp_path / f"res $(touch {path_marker}) ; x"
    overrides = f"collect.text_key=\"'{value}'\" results_dir=\"'{results}'\" collect.max_docs_per_source=5"
    proc = subprocess.run([str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "-d", str(tmp_path / "w"), "-c", "1",
                           "--until", "collect", "-p", "--config", "experiment=ci", f"overrides={overrides}"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not value_marker.exists() and not path_marker.exists()
    (plan,) = (results / ".plan" / "collect").glob("*.json")
    assert json.loads(plan.read_text())["config"]["text_key"] == value  # the job got it verbatim
    (step,) = (results / "collect").iterdir()
    assert (step / "stats.json").is_file()
    shell_lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "-m pipeline run-step" in line]
    assert shell_lines and not [line for line in shell_lines if value in line]  # -p prints them: no value there
