"""Tensor and pipeline parallelism (pipeline/core/train/parallel.py) with gloo processes on the
CPU train what one process trains on the same global batch: the same losses, gradient norms,
validation losses and final weights; composed with FSDP as torchtitan does; resumable."""
import json

import pytest
import torch

from pipeline.core.errors import StageError
from pipeline.core.train import parallel
from pipeline.core.train.config import Config
from tests.distributed.helpers import KNOBS, assert_same_training
from tests.pretrain.helpers import run_pretrain

SAME_BATCH = ["train.batch_size=4", "train.grad_accum=2"]  # 8 sequences per step, as 2 micro-batches


@pytest.fixture(scope="module")
def one_process(token_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "pretrain"
    run_pretrain(token_dir, out, *KNOBS, *SAME_BATCH)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("layout", [
    ["train.tp=2"],                                  # heads and MLP channels split over 2 processes
    ["train.pp=2"],                                  # 2 stages of one block each, GPipe
    ["train.pp=2", "train.pp_schedule=1f1b"],        # 1F1B
], ids=["tp2", "pp2-gpipe", "pp2-1f1b"])
def test_two_processes_train_as_one(token_dir, one_process, tmp_path, layout):
    out = tmp_path / "pretrain"
    stats = run_pretrain(token_dir, out, *KNOBS, *SAME_BATCH, "train.nproc=2", *layout)
    assert stats["world_size"] == 2 and stats["tokens"] == 6 * 8 * 64
    assert_same_training(out, one_process)


@pytest.mark.slow
def test_tensor_parallel_composes_with_fsdp(token_dir, one_process, tmp_path):
    """4 processes: 2 FSDP replicas (dp) x 2 tensor-parallel ranks (2-D, as torchtitan)."""
    out = tmp_path / "pretrain"
    run_pretrain(token_dir, out, *KNOBS, "train.batch_size=4", "train.grad_accum=1", "train.nproc=4",
                 "train.tp=2", "train.strategy=fsdp")
    assert_same_training(out, one_process)


@pytest.mark.slow
def test_a_pipelined_checkpoint_is_one_full_state_dict(token_dir, tmp_path):
    """The optimizer state of 2 stages is saved as one, under the unsplit model's names."""
    out = tmp_path / "pp"
    run_pretrain(token_dir, out, *KNOBS, *SAME_BATCH, "train.nproc=2", "train.pp=2")
    state = torch.load(out / "train_state.pt", weights_only=True)
    names = {n for g in state["optimizer"]["param_groups"] for n in g["params"]}
    assert {"embed.weight", "blocks.0.attn.q_proj.weight", "blocks.1.mlp.down_proj.weight"} <= names
    assert set(state["optimizer"]["state"]) == names


def test_layout_arithmetic_and_bad_layouts():
    tc = Config(nproc=4, nnodes=2, tp=2, pp=2, strategy="fsdp", rdzv_endpoint="n0:29500", launcher="pdsh").validate()
    assert tc.dp == 2 and tc.global_batch() == tc.batch_size * 2
    # mesh (pp, dp, tp), row-major: ranks 0,1 are one tensor-parallel pair of replica 0
    assert [tc.data_rank(r) for r in range(8)] == [0, 0, 1, 1, 0, 0, 1, 1]
    with pytest.raises(StageError, match="must divide the 4 processes"):
        Config(nproc=4, tp=3).validate()
    with pytest.raises(StageError, match="needs train.strategy=fsdp"):
        Config(nproc=4, tp=2).validate()
    with pytest.raises(StageError, match="grad_accum .* >= train.pp=2"):
        Config(nproc=2, pp=2, pp_schedule="1f1b").validate()
    from pipeline.model import Config as ModelConfig

    with pytest.raises(StageError, match="model.n_kv_head=1 is not divisible by train.tp=2"):
        parallel.check_model(ModelConfig(n_head=4, n_kv_head=1), Config(nproc=2, tp=2))
    with pytest.raises(StageError, match="at least as many blocks"):
        parallel.check_model(ModelConfig(n_layer=2), Config(nproc=4, pp=4))


def test_stages_cut_the_blocks_evenly():
    assert [list(parallel.stage_blocks(6, 4, i)) for i in range(4)] == [[0], [1, 2], [3], [4, 5]]
    assert [list(parallel.stage_blocks(2, 2, i)) for i in range(2)] == [[0], [1]]


def test_a_stage_keeps_the_full_models_names():
    from pipeline.model import Config as ModelConfig, build

    full = build(ModelConfig(vocab_size=64, n_layer=4, d_model=64, n_head=2, n_kv_head=1, d_mlp=128))
    names = set(full.state_dict())
    last = parallel.split_stage(build(ModelConfig(vocab_size=64, n_layer=4, d_model=64, n_head=2, n_kv_head=1,
                                                  d_mlp=128)), 1, 2)
    kept = set(last.state_dict())
    assert kept < names and {"blocks.2.attn.q_proj.weight", "norm.weight", "lm_head.weight"} <= kept
    assert not any(n.startswith(("blocks.0.", "blocks.1.")) for n in kept)
    # the tied matrix: the embedding stays beside the head (undecayed), its norm counts on stage 0
    assert last.embed.weight is last.lm_head.weight and last.counted_elsewhere == [last.lm_head.weight]
    first = parallel.split_stage(build(ModelConfig(vocab_size=64, n_layer=4, d_model=64, n_head=2, n_kv_head=1,
                                                   d_mlp=128)), 0, 2)
    assert first.lm_head is None and first.norm is None and first.counted_elsewhere == []
    assert json.dumps(sorted(kept))  # plain names, no wrapper prefixes
