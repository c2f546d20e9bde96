import os

import torch

from pipeline.model import Config as ModelConfig
from pipeline.model import Transformer
from pipeline.model.io import load_weights, save_weights
from pipeline.core.train import checkpoint, optim, precision
from pipeline.core.train.config import Config


def _setup(seed=0):
    torch.manual_seed(seed)
    model = Transformer(ModelConfig(vocab_size=64, n_layer=1, d_model=128, n_head=4, n_kv_head=2, d_mlp=128, max_seq_len=16))
    tc = Config(steps=10, warmup_steps=2, fused="foreach")
    opt = optim.adamw(model, tc, "cpu")
    return model, opt, optim.scheduler(opt, tc), precision.resolve("fp16", torch.device("cpu")).scaler()


def _step(model, opt, sched):
    x = torch.randint(0, 64, (2, 16))
    _, loss = model(x, x)
    loss.backward()
    opt.step()
    opt.zero_grad()
    sched.step()
    return loss.item()


def test_tied_weights_are_stored_once_and_restored_as_aliases(tmp_path):
    model, *_ = _setup()
    save_weights(model.state_dict(), tmp_path / "w.safetensors")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "w.safetensors"), "pt") as f:
        assert "lm_head.weight" not in f.keys() and "embed.weight" in f.keys()
    state = load_weights(tmp_path / "w.safetensors")
    assert torch.equal(state["lm_head.weight"], model.lm_head.weight)
    fresh, *_ = _setup(seed=1)
    fresh.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))


def test_resumed_state_continues_exactly(tmp_path):
    model, opt, sched, scaler = _setup()
    for _ in range(3):
        _step(model, opt, sched)
    checkpoint.save(tmp_path, 3, model, opt, sched, scaler, samples=6, keep=2, is_main=True)
    torch.manual_seed(42)
    expected = [_step(model, opt, sched) for _ in range(3)]

    model2, opt2, sched2, scaler2 = _setup(seed=5)  # different init: everything must come from disk
    state = checkpoint.load(checkpoint.latest(tmp_path), model2, opt2, sched2, scaler2)
    assert state == {"step": 3, "samples": 6}
    assert sched2.last_epoch == 3
    torch.manual_seed(42)
    assert [_step(model2, opt2, sched2) for _ in range(3)] == expected


def test_a_half_written_checkpoint_is_never_the_latest(tmp_path):
    model, opt, sched, scaler = _setup()
    checkpoint.save(tmp_path, 1, model, opt, sched, scaler, 2, keep=2, is_main=True)
    # a run killed while writing step 2 leaves only its temporary directory
    (tmp_path / f".tmp-step-000002-{os.getpid()}").mkdir()
    assert checkpoint.latest(tmp_path).name == "step-000001"
    for step in (2, 3, 4):
        checkpoint.save(tmp_path, step, model, opt, sched, scaler, 2 * step, keep=2, is_main=True)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-000003", "step-000004"]
    assert checkpoint.latest(tmp_path).name == "step-000004"
