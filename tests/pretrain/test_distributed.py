"""Two processes (torchrun, gloo on CPU) train exactly what one process trains with the same
global batch: DDP all-reduces gradients, FSDP2 shards the parameters."""
import pytest
import torch

from pipeline.core.train import metrics
from pipeline.core.train.checkpoint import load_weights
from pipeline.core.train.distributed import torchrun_command
from pipeline.core.train.config import Config
from tests.pretrain.helpers import run_pretrain

KNOBS = ["train.steps=6", "train.eval_every=3", "train.log_every=1", "train.warmup_steps=2"]


@pytest.fixture(scope="module")
def single(token_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "pretrain"
    run_pretrain(token_dir, out, *KNOBS, "train.batch_size=4", "train.grad_accum=2")
    return out


def _assert_same_training(a, b):
    ra, rb = metrics.read(a / "metrics.jsonl"), metrics.read(b / "metrics.jsonl")
    assert [r["step"] for r in ra] == [r["step"] for r in rb]
    for x, y in zip(ra, rb):
        for key in ("loss", "val_loss", "grad_norm"):
            if key in x:
                assert x[key] == pytest.approx(y[key], rel=1e-5, abs=1e-6), (x["step"], key)
    wa, wb = load_weights(a / "model.safetensors"), load_weights(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k], wb[k], rtol=1e-4, atol=1e-6), k


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_equal_one_with_the_same_global_batch(token_dir, single, tmp_path, strategy):
    out = tmp_path / "pretrain"
    stats = run_pretrain(token_dir, out, *KNOBS, "train.batch_size=4", "train.grad_accum=1",
                         "train.nproc=2", f"train.strategy={strategy}")
    assert stats["world_size"] == 2 and stats["tokens"] == 6 * 8 * 64
    _assert_same_training(out, single)


def test_launch_command_single_and_multi_node(tmp_path):
    one = torchrun_command(Config(nproc=2), tmp_path / "spec.json", "pipeline.pretrain.worker")
    assert one[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                       "-m", "pipeline.pretrain.worker", str(tmp_path / "spec.json")]
    many = torchrun_command(Config(nproc=8, nnodes=4, rdzv_endpoint="node0:29500",
                                   launcher="srun --ntasks-per-node=1"), tmp_path / "s.json", "pipeline.pretrain.worker")
    assert many[:2] == ["srun", "--ntasks-per-node=1"]
    assert "--nnodes=4" in many and "--rdzv-endpoint=node0:29500" in many and "--standalone" not in many
