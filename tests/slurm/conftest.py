"""A real one-node Slurm cluster for the tests in this folder (workflow/slurm/cluster.sh).

`make test-slurm` installs Slurm (workflow/slurm/install.sh) and runs these tests with
LMDAG_SLURM_TEST=1; elsewhere they are skipped, so a plain `pytest` does not start daemons.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "workflow/slurm/cluster.sh"


@pytest.fixture(scope="session")
def slurm_env():
    """The environment of a client of the running cluster (SLURM_CONF); the daemons stop after the session."""
    if os.environ.get("LMDAG_SLURM_TEST") != "1":
        pytest.skip("the Slurm cluster tests run under `make test-slurm` (LMDAG_SLURM_TEST=1)")
    if shutil.which("slurmctld", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None:
        pytest.fail("Slurm is not installed: run workflow/slurm/install.sh (as root) first")
    # One fixed place: a run killed before it stopped its daemons is cleaned up by the next.
    state = Path(tempfile.gettempdir()) / "lmdag-slurm-test"
    subprocess.run(["bash", str(CLUSTER), "stop", str(state)], check=False)
    shutil.rmtree(state, ignore_errors=True)  # a fresh accounting database: sacct shows this run's jobs only
    env = {**os.environ, "SLURM_CONF": str(state / "slurm.conf")}
    env["PATH"] = env.get("PATH", "") + ":/usr/sbin:/sbin"
    try:
        subprocess.run(["bash", str(CLUSTER), "start", str(state)], check=True)
        yield env
    finally:
        subprocess.run(["bash", str(CLUSTER), "stop", str(state)], check=False)
