"""AdamW with decoupled weight decay on matrices only, and the learning-rate schedules."""
from __future__ import annotations

import math

import torch

from pipeline.core.train.config import Config


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay 2-D weights (matmuls); leave norms, biases and the token embedding alone.

    nanoGPT decays the embedding too; Llama/OLMo recipes do not, since decay pulls rare
    tokens' rows towards zero. With tied embeddings the shared matrix is the output head as
    well; we follow OLMo 2 and do not decay it.
    """
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    decay, no_decay, seen = [], [], set()
    for p in model.parameters():  # parameters() yields a tied tensor once
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 and id(p) not in embeddings else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def adamw(model: torch.nn.Module, cfg: Config, device_type: str) -> torch.optim.AdamW:
    """torch's AdamW; the fused kernel where the device has one (CUDA, and CPU since 2.4)."""
    impl = cfg.fused
    if impl == "auto":
        impl = "fused" if device_type in ("cuda", "cpu") else "foreach"
    kwargs = {"fused": True} if impl == "fused" else {"foreach": impl == "foreach"}
    groups = param_groups(model, cfg.weight_decay)
    if cfg.tp > 1:  # tensor-parallel (DTensor) and whole parameters: one kind per fused kernel call
        from pipeline.core.train.parallel import split_by_dtensor

        groups = [dict(g, params=part) for g in groups for part in split_by_dtensor(g["params"])]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, **kwargs)


def lr_factor(step: int, cfg: Config) -> float:
    """Multiplier of the peak lr for optimizer step ``step`` (0-based).

    cosine: linear warmup, then half a cosine from 1 down to min_lr_ratio at the last step.
    wsd: linear warmup, constant, then a linear decay over the last ``decay_frac`` of the
    steps (MiniCPM's warmup-stable-decay: the stable phase can be branched and extended).
    """
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    floor = cfg.min_lr_ratio
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "cosine":
        span = max(cfg.steps - cfg.warmup_steps - 1, 1)
        progress = min((step - cfg.warmup_steps) / span, 1.0)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    decay_steps = max(round(cfg.steps * cfg.decay_frac), 1)
    decay_start = cfg.steps - decay_steps
    if step < decay_start:
        return 1.0
    progress = min((step - decay_start + 1) / decay_steps, 1.0)
    return 1.0 - (1 - floor) * progress


def scheduler(optimizer: torch.optim.Optimizer, cfg: Config) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))
