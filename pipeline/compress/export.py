"""The ``hf/`` export of a compressed model: what the ecosystem loads.

Quantized models are written in compressed-tensors' format (what llm-compressor writes):
``quantization_config`` in config.json, and per quantized Linear the tensors its compressor
stores — ``pack-quantized`` for weight-only int-b (``weight_packed`` int32, ``weight_scale``,
``weight_zero_point`` when asymmetric, ``weight_shape``), ``int-quantized`` for int8 weights
with int8 activations (``weight`` int8, ``weight_scale``). transformers loads both with the
``compressed-tensors`` package installed (AutoModelForCausalLM.from_pretrained); vLLM reads the
same format. Our packed codes are exactly compressed-tensors' packing, so the export renames
tensors and never re-rounds.

Asymmetric grids (zero points) export dense too: compressed-tensors 0.20's loader builds the
module on the meta device with unpacked zero points, then finds the packed ones its own
compressor writes (shape mismatch), so transformers cannot load them.

Pruned, low-rank and weight-shared models export as a plain Llama checkpoint of the weights
they apply (zeros kept, low-rank factors multiplied out, shared blocks written per layer):
Llama has no factorised or shared layers, so those savings live in our model directory only.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from pipeline.model.hf import export_hf, to_hf_name
from pipeline.model.quantized import LowRankLinear, QuantLinear, dense_weight
from pipeline.model.transformer import Transformer

ASYMMETRIC = ("compressed-tensors 0.20 cannot load its own packed zero points through transformers "
              "(meta-device shapes are unpacked); the dequantized weights are exported instead")


def dense_copy(model) -> Transformer:
    """A plain Transformer computing what ``model`` computes, with its own tensors per layer."""
    from dataclasses import replace

    plain = Transformer(replace(model.cfg))
    state = model.state_dict()
    modules = dict(model.named_modules(remove_duplicate=False))
    new_state = {}
    for name in plain.state_dict():
        owner = modules.get(name.rsplit(".", 1)[0])
        if isinstance(owner, (QuantLinear, LowRankLinear)):
            new_state[name] = dense_weight(owner).detach().clone()
        else:
            new_state[name] = state[name].detach().clone()
    plain.load_state_dict(new_state)
    return plain.eval()


def quant_scheme(module: QuantLinear) -> dict:
    weights = {"num_bits": module.bits, "type": "int", "symmetric": module.symmetric, "dynamic": False,
               "strategy": "group" if module.group_size else "channel",
               "group_size": module.group_size or None}
    acts = None
    if module.act_bits:
        acts = {"num_bits": module.act_bits, "type": "int", "symmetric": True, "dynamic": True, "strategy": "token"}
    return {"weights": weights, "input_activations": acts}


def quantization_config(model, quantized: dict[str, QuantLinear]) -> dict:
    """compressed-tensors' QuantizationConfig (validated by its own model) for the layers."""
    from compressed_tensors.quantization import QuantizationConfig

    schemes = {json.dumps(quant_scheme(m), sort_keys=True) for m in quantized.values()}
    if len(schemes) != 1:
        raise ValueError(f"one quantization scheme per model expected, got {len(schemes)}")
    scheme = json.loads(schemes.pop())
    fmt = "int-quantized" if scheme["input_activations"] else "pack-quantized"
    targets = sorted(to_hf_name(f"{n}.weight")[:-len(".weight")] for n in quantized)
    config = QuantizationConfig(config_groups={"group_0": {"targets": targets, **scheme}}, format=fmt,
                                quantization_status="compressed", ignore=["lm_head"])
    return json.loads(config.model_dump_json())


def compressed_tensors(name: str, module: QuantLinear) -> dict[str, torch.Tensor]:
    """The tensors compressed-tensors stores for one quantized Linear, by Hugging Face name."""
    base = to_hf_name(f"{name}.weight")[:-len(".weight")]
    out = {f"{base}.weight_scale": module.weight_scale.detach().clone()}
    if module.act_bits:  # int-quantized: int8 codes as they are
        out[f"{base}.weight"] = module.codes().clone()
        return out
    out[f"{base}.weight_packed"] = module.weight_packed.detach().clone()
    out[f"{base}.weight_shape"] = torch.tensor([module.out_features, module.in_features])
    if not module.symmetric:
        out[f"{base}.weight_zero_point"] = module.weight_zero_point.detach().clone()
    return out


def export(model, tokenizer_json: Path, out_dir: Path) -> dict:
    """Write ``out_dir`` (hf/); returns what was written, for stats.json."""
    from safetensors.torch import load_file, save_file

    export_hf(dense_copy(model), tokenizer_json, out_dir)
    quantized = {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    if not quantized:
        return {"format": "dense", "loads_with": "transformers, vLLM, llama.cpp's converter (plain Llama)"}
    if not all(m.symmetric for m in quantized.values()):
        return {"format": "dense", "loads_with": "transformers, vLLM, llama.cpp's converter (plain Llama)",
                "why_not_compressed": ASYMMETRIC}
    weights = out_dir / "model.safetensors"
    state = load_file(weights)
    for name, module in quantized.items():
        state.pop(to_hf_name(f"{name}.weight"))
        state.update(compressed_tensors(name, module))
    save_file(state, weights, metadata={"format": "pt"})
    config_file = out_dir / "config.json"
    config = json.loads(config_file.read_text())
    config["quantization_config"] = quantization_config(model, quantized)
    config_file.write_text(json.dumps(config, indent=2))
    return {"format": f"compressed-tensors {config['quantization_config']['format']}",
            "loads_with": "transformers (with compressed-tensors), vLLM"}
