"""The compression methods a step can chain, and the checks that run before any work.

A chain is applied in order: distillation, weight sharing, then pruning or low-rank, then
quantization (e.g. ``[wanda, gptq]``: prune to 50%, then GPTQ the kept weights; zeros stay
zero; ``[distill, int8]``: train a smaller student, then quantize it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from pipeline.compress import distill, lowrank, prune, quantize, sharing, smooth
from pipeline.compress.calibrate import block_linears
from pipeline.compress.chain import GROUPED, KINDS
from pipeline.core.errors import StageError


@dataclass(frozen=True)
class Method:
    kind: str  # distill | share | prune | lowrank | quantize
    calibrated: bool  # needs calibration inputs (the tokenize directory's train tokens)
    apply: Callable  # (model, Context) -> None (changed in place) or the model that replaces it
    what: str


def _distill(model, ctx):
    student, stats = distill.distill(model, ctx.cfg, ctx.inputs, ctx.out, ctx.log)
    ctx.layout["distill"] = {"teacher_params": model.num_params(), "student_params": student.num_params(),
                             "student": dict(ctx.cfg.student), "training": stats}
    return student


APPLY = {
    "distill": _distill,
    "int8": lambda m, c: quantize.quantize_rtn(m, c, 8, 0, True),
    "rtn": lambda m, c: quantize.quantize_rtn(m, c, c.cfg.bits, c.cfg.group_size, c.cfg.symmetric),
    "gptq": quantize.quantize_gptq,
    "awq": smooth.quantize_awq,
    "smoothquant": smooth.quantize_smoothquant,
    "magnitude": prune.prune_magnitude,
    "wanda": prune.prune_wanda,
    "sparsegpt": prune.prune_sparsegpt,
    "svd": lowrank.factorize,
    "tie_embeddings": sharing.tie_embeddings,
    "share_layers": sharing.share_layers,
}
METHODS = {name: Method(kind, calibrated, APPLY[name], what) for name, (kind, calibrated, what) in KINDS.items()}


@dataclass
class Context:
    """What a method reads and records: the config, calibration ids, per-layer errors."""

    cfg: object
    ids: object = None
    errors: dict = field(default_factory=dict)
    layout: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)  # role -> directory (distillation reads them)
    out: object = None
    log: object = None


def check_layers(model, cfg) -> None:
    """Every setting against every layer it applies to, before any work."""
    methods = set(cfg.methods)
    n_prune, m_prune = prune.pattern_nm(cfg.pattern)
    for name, linear in block_linears(model).items():
        out_f, in_f = linear.out_features, linear.in_features
        if methods & set(GROUPED) and cfg.group_size and in_f % cfg.group_size:
            raise StageError(f"compress.group_size={cfg.group_size} does not divide the input width {in_f} of "
                             f"layer {name}; choose a divisor of every layer's input width (or 0 = per channel)")
        if methods & {"magnitude", "wanda", "sparsegpt"} and m_prune and in_f % m_prune:
            raise StageError(f"compress.pattern={cfg.pattern}: layer {name}'s input width {in_f} is not a multiple of {m_prune}")
        if "svd" in methods and cfg.rank > min(out_f, in_f):
            raise StageError(f"compress.rank={cfg.rank} exceeds layer {name}'s rank limit min({out_f}, {in_f}) = "
                             f"{min(out_f, in_f)}")
    if "share_layers" in methods and cfg.share_group > model.cfg.n_layer:
        raise StageError(f"compress.share_group={cfg.share_group} exceeds the model's {model.cfg.n_layer} blocks")
