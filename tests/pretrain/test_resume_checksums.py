"""A damaged checkpoint is found by its checksums, refused with the reason, and the previous one used."""
import json
import logging

import pytest
import torch

from pipeline.core.errors import StageError
from pipeline.core.train import checkpoint, optim, precision
from pipeline.core.train.config import Config
from pipeline.model import Config as ModelConfig
from pipeline.model import Transformer


def _setup(seed=0):
    torch.manual_seed(seed)
    model = Transformer(ModelConfig(vocab_size=64, n_layer=1, d_model=64, n_head=2, n_kv_head=1, d_mlp=64, max_seq_len=16))
    tc = Config(steps=10, warmup_steps=2, fused="foreach")
    opt = optim.adamw(model, tc, "cpu")
    return model, opt, optim.scheduler(opt, tc), precision.resolve("fp32", torch.device("cpu")).scaler()


def _train_and_save(tmp_path, steps=(1, 2, 3)):
    model, opt, sched, scaler = _setup()
    weights = {}
    for step in steps:
        x = torch.randint(0, 64, (2, 16))
        model(x, x)[1].backward()
        opt.step()
        opt.zero_grad()
        sched.step()
        checkpoint.save(tmp_path, step, model, opt, sched, scaler, samples=2 * step, keep=5, is_main=True)
        weights[step] = {k: v.clone() for k, v in model.state_dict().items()}
    return weights


def _restore(path):
    model, opt, sched, scaler = _setup(seed=9)
    return checkpoint.load(path, model, opt, sched, scaler), model


def flip_a_byte(path, at=-100):
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {
    "truncated weights": (lambda p: p.joinpath("model.safetensors").write_bytes(p.joinpath("model.safetensors").read_bytes()[:1000]),
                          "model.safetensors has 1000 bytes, .* were written"),
    "corrupted weights": (lambda p: flip_a_byte(p / "model.safetensors"), "model.safetensors does not match the sha256"),
    "corrupted state": (lambda p: flip_a_byte(p / "train_state.pt"), "train_state.pt does not match the sha256"),
    "missing state": (lambda p: (p / "train_state.pt").unlink(), "train_state.pt is missing"),
    "no checksums": (lambda p: (p / "checksums.json").unlink(), "checksums.json is missing or unreadable"),
}


def test_every_checkpoint_carries_the_checksums_of_its_files(tmp_path):
    _train_and_save(tmp_path, steps=(1,))
    sums = json.loads((tmp_path / "step-000001" / "checksums.json").read_text())
    assert set(sums) == {"model.safetensors", "train_state.pt"}
    assert sums["model.safetensors"]["bytes"] == (tmp_path / "step-000001" / "model.safetensors").stat().st_size
    assert checkpoint.damage(tmp_path / "step-000001") is None


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_checkpoint_is_refused_and_the_previous_one_resumed(tmp_path, kind, caplog):
    weights = _train_and_save(tmp_path)
    harm, message = DAMAGE[kind]
    harm(tmp_path / "step-000003")
    with pytest.raises(StageError, match=f"checkpoint .*step-000003 refused: .*{message}"):
        _restore(tmp_path / "step-000003")
    with caplog.at_level(logging.WARNING, logger="lmdag.checkpoint"):
        path = checkpoint.latest(tmp_path)
    assert path.name == "step-000002"
    assert any("step-000003" in r.message and "refused" in r.message for r in caplog.records)
    state, model = _restore(path)
    assert state == {"step": 2, "samples": 4}
    assert all(torch.equal(model.state_dict()[k], weights[2][k]) for k in weights[2])


def test_when_every_checkpoint_is_damaged_the_error_names_each_and_what_to_do(tmp_path):
    _train_and_save(tmp_path, steps=(1, 2))
    flip_a_byte(tmp_path / "step-000001" / "model.safetensors")
    (tmp_path / "step-000002" / "train_state.pt").write_bytes(b"")
    with pytest.raises(StageError, match=r"no whole checkpoint in .*refused step-000002: .*0 bytes.*"
                                         r"refused step-000001: .*sha256.*Delete .* to train from the start"):
        checkpoint.latest(tmp_path)


def test_a_lost_latest_marker_still_finds_the_newest_whole_checkpoint(tmp_path):
    _train_and_save(tmp_path)
    (tmp_path / "latest").write_text("garbage\n")
    assert checkpoint.latest(tmp_path).name == "step-000003"
    (tmp_path / "latest").unlink()
    assert checkpoint.latest(tmp_path).name == "step-000003"


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_train_state_holding_code_is_refused_without_running_it(tmp_path):
    _train_and_save(tmp_path, steps=(1,))
    path, marker = tmp_path / "step-000001", tmp_path / "pwned"
    state = torch.load(path / "train_state.pt", weights_only=True)
    torch.save({**state, "scheduler": _RunsCode(marker)}, path / "train_state.pt")
    sums = json.loads((path / "checksums.json").read_text())  # as an attacker would: checksums match
    sums["train_state.pt"] = checkpoint._file_digest(path / "train_state.pt")
    (path / "checksums.json").write_text(json.dumps(sums))
    with pytest.raises(StageError, match="train_state.pt refused: it holds more than tensors"):
        _restore(path)
    assert not marker.exists()
