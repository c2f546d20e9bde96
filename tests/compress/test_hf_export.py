"""hf/ loads with transformers: compressed-tensors for quantized variants (logits equal to our
dequantized model; off the fp model by the quantization's own error), plain Llama otherwise."""
import json

import pytest
import torch

from pipeline.model.io import load_model
from pipeline.stage import execute

FAST = {"calibration_samples": 16, "eval_windows": 8, "latency_tokens": 2, "progress": False}


def hf_logits(path, ids):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(ids).logits, model


@pytest.mark.parametrize("methods,extra,fmt", [
    (["gptq"], {"bits": 4, "group_size": 128}, "pack-quantized"),
    (["rtn"], {"bits": 3, "group_size": 64}, "pack-quantized"),
    (["int8"], {}, "pack-quantized"),
    (["smoothquant"], {}, "int-quantized"),
])
def test_quantized_export_loads_in_transformers_with_our_logits(methods, extra, fmt, model_dir, token_dir, tmp_path):
    out = tmp_path / "q"
    stats = execute("compress", {**FAST, "methods": methods, **extra}, {"model": model_dir, "tokens": token_dir}, out)
    config = json.loads((out / "hf" / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors" and config["format"] == fmt
    assert stats["hf_export"]["format"] == f"compressed-tensors {fmt}"
    ids = torch.randint(0, 320, (2, 48), generator=torch.Generator().manual_seed(0))
    ours, fp = load_model(out, kernels="torch"), load_model(model_dir, kernels="torch")
    with torch.no_grad():
        ours_logits, fp_logits = ours(ids)[0], fp(ids)[0]
    theirs, hf_model = hf_logits(out / "hf", ids)
    assert hf_model.model.layers[0].self_attn.q_proj.quantization_scheme.weights.num_bits == (extra.get("bits") or 8)
    torch.testing.assert_close(theirs, ours_logits, rtol=0, atol=1e-4)  # same codes, same arithmetic
    # against the fp model: the quantization's error, visible but small next to the logits' spread
    err = (theirs - fp_logits).abs().mean() / fp_logits.std()
    assert 1e-4 < float(err) < 0.2


def test_asymmetric_grids_export_their_dequantized_weights(model_dir, token_dir, tmp_path):
    out = tmp_path / "a"
    stats = execute("compress", {**FAST, "methods": ["rtn"], "bits": 4, "symmetric": False},
                    {"model": model_dir, "tokens": token_dir}, out)
    assert stats["hf_export"]["format"] == "dense" and "zero points" in stats["hf_export"]["why_not_compressed"]
    ids = torch.randint(0, 320, (1, 32), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = load_model(out, kernels="torch")(ids)[0]
    torch.testing.assert_close(hf_logits(out / "hf", ids)[0], ours, rtol=1e-4, atol=1e-4)


def test_pruned_export_is_a_plain_llama_with_the_zeros(model_dir, token_dir, tmp_path):
    out = tmp_path / "p"
    execute("compress", {**FAST, "methods": ["wanda"], "pattern": "2:4"}, {"model": model_dir, "tokens": token_dir}, out)
    assert "quantization_config" not in json.loads((out / "hf" / "config.json").read_text())
    ids = torch.randint(0, 320, (1, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = load_model(out, kernels="torch")(ids)[0]
    theirs, hf_model = hf_logits(out / "hf", ids)
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)
    w = hf_model.model.layers[0].mlp.up_proj.weight
    assert bool(((w.reshape(w.shape[0], -1, 4) == 0).sum(-1) >= 2).all())


def test_low_rank_and_shared_exports_apply_the_same_weights(model_dir, token_dir, tmp_path):
    ids = torch.randint(0, 320, (1, 32), generator=torch.Generator().manual_seed(2))
    for name, config in (("svd", {"methods": ["svd"], "rank": 32}), ("share", {"methods": ["share_layers"]})):
        out = tmp_path / name
        execute("compress", {**FAST, **config}, {"model": model_dir, "tokens": token_dir}, out)
        with torch.no_grad():
            ours = load_model(out, kernels="torch")(ids)[0]
        theirs, _ = hf_logits(out / "hf", ids)
        torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)
