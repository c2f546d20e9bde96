"""Two workflow runs on one results directory: the second is refused at once, naming the
first's pid, until the first ends (however it ends: the lock dies with its process)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def snakemake(workdir: Path, results: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "-d", str(workdir), "-c", "1", "--until", "collect",
           "--config", "experiment=ci", f"overrides=results_dir={results}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_a_second_run_on_the_same_results_is_refused(tmp_path):
    results = tmp_path / "shared-results"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from workflow.lock import hold; "
                               "hold(sys.argv[1]); print('held', flush=True); time.sleep(600)", str(results)],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        # another working directory, so Snakemake's own lock does not see the first run
        proc = snakemake(tmp_path / "second", results)
        assert proc.returncode != 0
        assert f"is in use by another run (pid {holder.pid})" in proc.stdout + proc.stderr
        assert not (results / "collect").exists()  # refused before any job ran
        dry = snakemake(tmp_path / "second", results, "-n")  # a dry run only reads
        assert dry.returncode == 0, dry.stderr[-2000:]
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # the way a run dies worst: no cleanup
        holder.wait()
    time.sleep(0.1)
    from workflow.lock import hold, release

    hold(results)  # the killed holder's lock went with its process
    release(results)


def test_a_config_key_snakemake_would_ignore_is_refused(tmp_path):
    cmd = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "-n", "--config", "experiment=ci",
           f"results_dir={tmp_path}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and "'results_dir' is none of them" in proc.stderr + proc.stdout
    assert f'"overrides=results_dir={tmp_path}"' in proc.stderr + proc.stdout
