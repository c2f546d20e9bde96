"""What each method trains: the whole model, LoRA adapters (peft), or a reward head.

    lora_wrap(model, cfg.lora)              peft's LoraModel over our Linear layers, by module name
    RewardModel(model)                      a scalar head on the final hidden state
    save_reward(out, rm) / load_reward(dir) a reward model directory: the backbone's model directory
                                            plus reward_head.safetensors
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from pipeline.core.errors import StageError

REWARD_HEAD = "reward_head.safetensors"
ADAPTER_DIR = "adapter"


def lora_wrap(model: nn.Module, lcfg):
    """Freeze ``model`` and add LoRA adapters to the Linear layers named in lcfg.target_modules
    (peft finds them by name in any nn.Module: q_proj, k_proj, ... of pipeline/model/transformer.py)."""
    from peft import LoraConfig, get_peft_model

    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    missing = sorted(set(lcfg.target_modules) - names)
    if missing:
        raise StageError(f"finetune.lora.target_modules: the model has no Linear layers named {missing} "
                         f"(it has {sorted(names)})")
    config = LoraConfig(r=lcfg.rank, lora_alpha=lcfg.alpha, lora_dropout=lcfg.dropout,
                        target_modules=list(lcfg.target_modules), bias="none")
    return get_peft_model(model, config)


class RewardModel(nn.Module):
    """r(prompt, reply): a linear head on the hidden state at the reply's last content token (the
    position that has read the whole reply), as transformers' *ForSequenceClassification."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.score = nn.Linear(backbone.cfg.d_model, 1, bias=False)
        nn.init.normal_(self.score.weight, std=backbone.cfg.init_std)

    def forward(self, idx: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        h = self.backbone.hidden_states(idx)
        return self.score(h[torch.arange(idx.shape[0], device=idx.device), last]).squeeze(-1).float()


def save_reward(out: Path, weights: dict, backbone, tokenizer_json, meta, log=None) -> None:
    from pipeline.model.io import save_model_dir, save_weights

    backbone.load_state_dict({k.removeprefix("backbone."): v for k, v in weights.items() if k.startswith("backbone.")})
    save_model_dir(out, backbone, tokenizer_json, meta, log=log)
    save_weights({"score.weight": weights["score.weight"]}, out / REWARD_HEAD)


def load_reward(path, device="cpu") -> RewardModel:
    from pipeline.model.io import load_model, load_weights

    path = Path(path)
    if not (path / REWARD_HEAD).is_file():
        raise StageError(f"{path}: not a reward model directory (no {REWARD_HEAD}; made by finetune method=reward)")
    rm = RewardModel(load_model(path))
    rm.score.load_state_dict({"weight": load_weights(path / REWARD_HEAD)["score.weight"]})
    return rm.to(device).eval()
