"""What the slurm profile makes of our rules, without a cluster: the sbatch line the executor
plugin builds for a multi-node pretraining job, and `make run PROFILE=slurm`."""
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.core.train.config import Config

REPO = Path(__file__).resolve().parents[2]


class Resources(dict):
    """Snakemake's job resources: read as attributes and with .get."""

    __getattr__ = dict.__getitem__


def sbatch_line(resources: dict, threads: int) -> str:
    submit = pytest.importorskip("snakemake_executor_plugin_slurm.submit_string")
    job = SimpleNamespace(resources=Resources(resources), threads=threads, name="pretrain")
    params = {"run_uuid": "run", "slurm_logfile": "log", "comment_str": "rule_pretrain", "account": "",
              "partition": "", "workdir": "/work"}
    return submit.get_submit_command(job, params)


def test_a_multi_node_pretrain_job_asks_for_every_node():
    res = Config(nnodes=4, nproc=8, threads=6, device="cuda").job_resources()
    line = sbatch_line({"mem_mb": 4000, **res}, res["threads"])
    assert "--nodes=4" in line and "--ntasks=4" in line and "--cpus-per-task=48" in line
    assert "-t 1440" in line
    # the jobstep executor runs an "mpi" job's command as it is: our own srun starts torchrun per node
    jobstep = pytest.importorskip("snakemake_executor_plugin_slurm_jobstep")
    assert '"mpi" in job.resources.keys()' in Path(jobstep.__file__).read_text()


def test_a_one_node_job_is_one_task():
    res = Config().job_resources()
    line = sbatch_line({"mem_mb": 4000, **res}, res["threads"])
    assert "--nodes=1" in line and "--ntasks=1" in line and "--cpus-per-task=1" in line


def test_make_run_with_the_slurm_profile():
    out = subprocess.run(["make", "-n", "-C", str(REPO), "run", "PROFILE=slurm", "EXPERIMENT=ci"],
                         capture_output=True, text=True, check=True).stdout
    assert "--profile workflow/profiles/slurm --config experiment=ci" in out
