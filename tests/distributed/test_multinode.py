"""Pretraining across nodes: two torchrun agents (two "nodes" on one machine) meet at a c10d
rendezvous on 127.0.0.1, one gloo process each, and train what one process trains with the
same global batch. And the launch line on a Slurm allocation: srun once per node, the
rendezvous on its first node."""
import sys

import pytest

from pipeline.core.errors import StageError
from pipeline.core.train import distributed
from pipeline.core.train.config import Config
from tests.distributed.helpers import KNOBS, assert_same_training, free_port
from tests.pretrain.helpers import run_pretrain


@pytest.fixture(scope="module")
def one_process(token_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "pretrain"
    run_pretrain(token_dir, out, *KNOBS, "train.batch_size=4", "train.grad_accum=2")
    return out


@pytest.mark.slow
def test_two_nodes_train_as_one_process(token_dir, one_process, tmp_path):
    launcher = f"{sys.executable} -m tests.distributed.agents 2"  # what srun does on two nodes
    out = tmp_path / "pretrain"
    stats = run_pretrain(token_dir, out, *KNOBS, "train.batch_size=4", "train.nnodes=2", "train.nproc=1",
                         f"train.rdzv_endpoint=127.0.0.1:{free_port()}", f"train.launcher='{launcher}'")
    assert stats["world_size"] == 2 and stats["tokens"] == 6 * 8 * 64
    assert_same_training(out, one_process)


def test_on_slurm_srun_starts_torchrun_on_every_node(monkeypatch, tmp_path):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "16")
    monkeypatch.setattr(distributed, "slurm_nodes", lambda: ["gpu07", "gpu08", "gpu09"])
    cmd = distributed.torchrun_command(Config(nnodes=3, nproc=4).validate(), tmp_path / "spec.json", "w")
    assert cmd[:6] == ["srun", "--nodes=3", "--ntasks=3", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
                       "--cpus-per-task=16"]
    assert cmd[6:9] == [sys.executable, "-m", "torch.distributed.run"]
    assert cmd[9:] == ["--nnodes=3", "--rdzv-backend=c10d", "--rdzv-endpoint=gpu07:29500", "--rdzv-id=4242",
                       "--nproc-per-node=4", "-m", "w", str(tmp_path / "spec.json")]
    one_node = distributed.torchrun_command(Config(nproc=4), tmp_path / "spec.json", "w")
    assert one_node[:3] == [sys.executable, "-m", "torch.distributed.run"] and "--standalone" in one_node


def test_outside_slurm_several_nodes_need_an_endpoint_and_a_launcher(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with pytest.raises(StageError, match="rdzv_endpoint=HOST:PORT") as err:
        Config(nnodes=2).validate()
    assert "train.launcher" in str(err.value)
    Config(nnodes=2, rdzv_endpoint="node0:29500", launcher="pdsh -w node[0-1]").validate()


def test_the_job_asks_slurm_for_every_node():
    assert Config().job_resources() == {"threads": 1, "nodes": 1, "runtime": 1440}
    many = Config(nnodes=4, nproc=8, threads=6, device="cuda").job_resources()
    assert many == {"threads": 48, "nodes": 4, "tasks": 4, "mpi": "srun", "runtime": 1440, "gres": "gpu:8"}
