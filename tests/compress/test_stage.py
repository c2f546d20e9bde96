"""The compress stage end to end on a briefly trained model: every method writes a model
directory that load_model rebuilds strictly, with the figures the report needs."""
import json

import pytest
import torch

from pipeline.core.errors import StageError
from pipeline.model.io import load_model
from pipeline.model.quantized import LowRankLinear, QuantLinear
from pipeline.stage import execute

FAST = {"calibration_samples": 16, "eval_windows": 16, "latency_tokens": 2, "progress": False}


def compress(model_dir, token_dir, out, **config):
    inputs = {"model": model_dir} if token_dir is None else {"model": model_dir, "tokens": token_dir}
    return execute("compress", {**FAST, **config}, inputs, out)


@pytest.fixture(scope="module")
def gptq_dir(model_dir, token_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("gptq") / "gptq"
    compress(model_dir, token_dir, out, methods=["gptq"], bits=4, group_size=128)
    return out


def test_gptq_variant_is_a_smaller_model_directory_with_every_figure(gptq_dir, model_dir):
    stats = json.loads((gptq_dir / "stats.json").read_text())
    base = stats["base"]
    for s in (stats, base):
        for key in ("size_bytes", "bits_per_weight", "params", "nonzeros", "val_perplexity", "val_bits_per_byte",
                    "latency_ms_per_token"):
            assert s[key] > 0, key
    assert stats["size_bytes"] < 0.5 * base["size_bytes"]
    # 4-bit codes + one fp32 scale per 128 weights = 4.25 bits in the quantized layers
    assert stats["linear_bits_per_weight"] == 4.25 and stats["layers_replaced"] == 14
    assert stats["label"] == "gptq int4 g128"
    assert stats["params"] == base["params"]
    assert abs(stats["val_bits_per_byte"] - base["val_bits_per_byte"]) < 0.1
    layout = json.loads((gptq_dir / "compression.json").read_text())
    assert layout["methods"] == ["gptq"] and layout["layers"]["blocks.0.attn.q_proj"]["bits"] == 4
    assert 0 < layout["errors"]["blocks.1.mlp.down_proj"]["output_error"] < 0.2


def test_the_saved_variant_loads_strictly_as_quantized_layers(gptq_dir):
    model = load_model(gptq_dir)
    assert isinstance(model.blocks[1].mlp.down_proj, QuantLinear)
    assert model.blocks[1].mlp.down_proj.weight_packed.dtype == torch.int32
    weights = gptq_dir / "model.safetensors"
    from pipeline.model.io import load_weights, save_weights

    state = load_weights(weights)
    state.pop("blocks.0.attn.q_proj.weight_scale")
    save_weights(state, gptq_dir.parent / "broken.safetensors")
    weights.rename(gptq_dir.parent / "good.safetensors")
    (gptq_dir.parent / "broken.safetensors").rename(weights)
    try:
        with pytest.raises(StageError, match="missing.*blocks.0.attn.q_proj.weight_scale"):
            load_model(gptq_dir)
    finally:
        (gptq_dir.parent / "good.safetensors").replace(weights)


def test_base_figures_follow_pretrainings_final_evaluation(gptq_dir, model_dir, token_dir):
    import contextlib

    from pipeline.core.tokens import TokenData
    from pipeline.core.train import evaluation
    from pipeline.core.train.batches import eval_starts

    data, model = TokenData(token_dir), load_model(model_dir)
    starts = eval_starts(len(data.val), 64, 16)
    nats, n = evaluation.loss_sums(model, data.val, starts, 64, 16, contextlib.nullcontext, "cpu")
    base = json.loads((gptq_dir / "stats.json").read_text())["base"]
    assert base["val_loss"] == pytest.approx(nats / n, rel=1e-6) and base["val_tokens_scored"] == n


@pytest.mark.parametrize("methods,extra", [
    (["int8"], {}), (["rtn"], {"bits": 3, "group_size": 64, "symmetric": False}), (["awq"], {}),
    (["smoothquant"], {}), (["wanda", "gptq"], {"pattern": "2:4"}),
])
def test_quantized_variants(methods, extra, model_dir, token_dir, tmp_path):
    stats = compress(model_dir, token_dir, tmp_path / "v", methods=methods, **extra)
    model = load_model(tmp_path / "v")
    q = model.blocks[0].mlp.gate_proj
    assert isinstance(q, QuantLinear)
    assert stats["val_bits_per_byte"] < stats["base"]["val_bits_per_byte"] + 0.3
    if methods == ["smoothquant"]:
        assert q.act_bits == 8 and q.bits == 8
    if "wanda" in methods:  # 2:4 survives quantization: at least 2 zeros in every 4 inputs
        zeros = (q.dequantized_weight().reshape(q.out_features, -1, 4) == 0).sum(-1)
        assert bool((zeros >= 2).all())
        assert stats["sparsity"] > 0.3


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_pruned_variants_report_nonzeros(method, model_dir, token_dir, tmp_path):
    stats = compress(model_dir, token_dir, tmp_path / "p", methods=[method], sparsity=0.5)
    model = load_model(tmp_path / "p")
    w = model.blocks[1].attn.o_proj.weight
    assert float((w == 0).float().mean()) == pytest.approx(0.5, abs=0.01)
    assert stats["nonzeros"] < stats["base"]["nonzeros"] - 0.4 * 14 * 128 * 128
    assert stats["params"] == stats["base"]["params"] and stats["label"] == f"{method} 50%"


def test_low_rank_by_energy_and_by_rank(model_dir, token_dir, tmp_path):
    stats = compress(model_dir, token_dir, tmp_path / "e", methods=["svd"], energy=0.5)
    model = load_model(tmp_path / "e")
    layout = json.loads((tmp_path / "e" / "compression.json").read_text())
    layer = model.blocks[0].mlp.up_proj
    assert isinstance(layer, LowRankLinear) and layer.rank == layout["layers"]["blocks.0.mlp.up_proj"]["rank"]
    assert layout["errors"]["blocks.0.mlp.up_proj"]["energy_kept"] >= 0.5
    assert stats["nonzeros"] <= stats["params"] < stats["base"]["params"]
    compress(model_dir, token_dir, tmp_path / "r", methods=["svd"], rank=16)
    assert load_model(tmp_path / "r").blocks[1].attn.o_proj.rank == 16


def test_cross_layer_sharing_stores_each_group_once(model_dir, token_dir, tmp_path):
    stats = compress(model_dir, token_dir, tmp_path / "s", methods=["share_layers"], share_group=2)
    model = load_model(tmp_path / "s")
    assert model.blocks[0] is model.blocks[1]
    block_params = sum(p.numel() for p in model.blocks[0].parameters())
    assert stats["params"] == stats["base"]["params"] - block_params
    assert stats["size_bytes"] < stats["base"]["size_bytes"] - 3.5 * block_params


def test_tying_an_untied_model(model_dir, token_dir, tmp_path):
    from tests.compress.conftest import train_model

    untied = train_model(token_dir, tmp_path / "untied", steps=5, tie_embeddings=False)
    stats = compress(untied, token_dir, tmp_path / "t", methods=["tie_embeddings"], tie="embed")
    model = load_model(tmp_path / "t")
    assert model.cfg.tie_embeddings and model.lm_head.weight is model.embed.weight
    torch.testing.assert_close(model.embed.weight, load_model(untied).embed.weight)
    assert stats["params"] == stats["base"]["params"] - 320 * 128
    with pytest.raises(StageError, match="already tied"):
        compress(model_dir, token_dir, tmp_path / "t2", methods=["tie_embeddings"])


@pytest.mark.parametrize("config,message", [
    ({"methods": ["gptq"], "group_size": 256}, r"group_size=256 does not divide the input width 128 of layer blocks\.0\.attn\.q_proj"),
    ({"methods": ["rtn"], "group_size": 256}, r"group_size=256 does not divide .* layer blocks\.0"),
    ({"methods": ["wanda"], "sparsity": 1.0}, r"compress\.sparsity=1\.0: must be in \[0, 1\)"),
    ({"methods": ["magnitude"], "sparsity": -0.1}, r"compress\.sparsity=-0\.1"),
    ({"methods": ["svd"], "rank": 200}, r"compress\.rank=200 exceeds layer blocks\.0\.attn\.q_proj's rank limit min\(128, 128\) = 128"),
    ({"methods": ["gptq"], "calibration_samples": 0}, r"calibration_samples=0: must be >= 1"),
    ({"methods": ["gptq"], "calibration_samples": 100000}, r"calibration_samples=100000: .* has only \d+ windows"),
    ({"methods": ["int4"]}, r"unknown method\(s\) \['int4'\]"),
    ({"methods": ["gptq", "wanda"]}, r"order must be"),
    ({"methods": ["share_layers", "gptq"]}, r"share_layers combines only"),
])
def test_bad_settings_fail_before_any_work(config, message, model_dir, token_dir, tmp_path):
    with pytest.raises(StageError, match=message):
        compress(model_dir, token_dir, tmp_path / "bad", **config)
    assert not (tmp_path / "bad").exists()


def test_calibrated_methods_need_tokens_and_input_must_be_uncompressed(model_dir, gptq_dir, token_dir, tmp_path):
    with pytest.raises(StageError, match=r"\['gptq'\] need calibration text"):
        compress(model_dir, None, tmp_path / "x", methods=["gptq"])
    with pytest.raises(StageError, match="already compressed"):
        compress(gptq_dir, token_dir, tmp_path / "y", methods=["int8"])
    stats = compress(model_dir, None, tmp_path / "z", methods=["int8"])  # no tokens: sizes only
    assert "val_bits_per_byte" not in stats and stats["size_bytes"] > 0


def test_an_empty_calibration_set_is_an_error(model_dir, token_dir, tmp_path):
    import shutil

    empty = tmp_path / "tok"
    shutil.copytree(token_dir, empty)
    (empty / "train.bin").write_bytes(b"")
    with pytest.raises(StageError, match="empty calibration set"):
        compress(model_dir, empty, tmp_path / "e", methods=["wanda"])


def test_distillation_trains_a_smaller_student_through_the_shared_loop(model_dir, token_dir, tmp_path):
    train = {"steps": 12, "batch_size": 4, "warmup_steps": 2, "eval_every": 6, "eval_batches": 1,
             "checkpoint_every": 6, "log_every": 3, "progress": False, "threads": 1}
    stats = compress(model_dir, token_dir, tmp_path / "d", methods=["distill", "int8"], student={"n_layer": 1},
                     temperature=2.0, kl_weight=0.7, train=train)
    student = load_model(tmp_path / "d")
    assert student.cfg.n_layer == 1 and isinstance(student.blocks[0].attn.q_proj, QuantLinear)
    layout = json.loads((tmp_path / "d" / "compression.json").read_text())
    assert layout["distill"]["training"]["steps"] == 12
    assert layout["distill"]["training"]["teacher_blocks_copied"] == [1]
    assert stats["params"] < stats["base"]["params"] and stats["label"] == "distill n_layer=1 + int8"
    records = [json.loads(line) for line in (tmp_path / "d" / "metrics.jsonl").read_text().splitlines()]
    losses = [r for r in records if "kl" in r]
    assert len(losses) == 4 and all(r["kl"] >= 0 and r["ce"] > 0 for r in losses)
    assert any("val_loss" in r for r in records)
    assert not list(tmp_path.glob(".ckpt-*")) and not (tmp_path / "d" / ".student.safetensors").exists()


def test_distillation_loss_is_hintons():
    """kl_weight T^2 KL(teacher_T || student_T) + (1 - kl_weight) CE, against a hand computation."""
    from pipeline.compress.distill import kd_loss

    torch.manual_seed(0)
    t_logits, s_logits = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    y = torch.randint(0, 11, (2, 5))
    y[0, 0] = -100
    loss, extra = kd_loss(lambda x: (t_logits, None), 3.0, 0.25)(lambda x: (s_logits, None), (None, y))
    keep = (y != -100).reshape(-1)
    p_t = torch.softmax(t_logits / 3, -1).reshape(-1, 11)[keep]
    log_q = torch.log_softmax(s_logits / 3, -1).reshape(-1, 11)[keep]
    kl = (p_t * (p_t.log() - log_q)).sum(-1).mean() * 9
    ce = torch.nn.functional.cross_entropy(s_logits.reshape(-1, 11), y.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(loss, 0.25 * kl + 0.75 * ce)
    torch.testing.assert_close(extra["kl"], kl)


def test_student_settings_are_checked_before_training(model_dir, token_dir, tmp_path):
    with pytest.raises(StageError, match=r"compress.student: unknown model field\(s\) \['layers'\]"):
        compress(model_dir, token_dir, tmp_path / "a", methods=["distill"], student={"layers": 1})
    with pytest.raises(StageError, match="needs the teacher's widths"):
        compress(model_dir, token_dir, tmp_path / "b", methods=["distill"], student={"d_model": 64, "d_mlp": 128})


def test_evaluate_loads_a_compressed_variant_natively(gptq_dir, model_dir):
    from pipeline.evaluate.models import load_lm

    lm, how = load_lm(gptq_dir, batch_size=4)
    base, _ = load_lm(model_dir, batch_size=4)
    text = ["The old man sees the green field. A dog follows the king."]
    assert how == "native"
    got, ref = lm.loglikelihood_rolling(text)[0], base.loglikelihood_rolling(text)[0]
    assert got != ref and abs(got - ref) < 0.1 * abs(ref)


def test_the_command_line_compresses_a_users_model(model_dir, token_dir, tmp_path):
    from pipeline.__main__ import main

    out = tmp_path / "int4"
    assert main(["compress", f"in={model_dir}", f"in.tokens={token_dir}", f"out={out}", "methods=[gptq]",
                 "calibration_samples=8", "eval_windows=4", "latency_tokens=2", "progress=false"]) == 0
    assert isinstance(load_model(out).blocks[0].attn.v_proj, QuantLinear)
    assert json.loads((out / "stats.json").read_text())["methods"] == ["gptq"]
