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


METHODS = {
    "distill": Method("distill", False, _distill,
                      "a smaller student trained on the teacher's soft targets (shared training loop)"),
    "int8": Method("quantize", False, lambda m, c: quantize.quantize_rtn(m, c, 8, 0, True),
                   "int8 weights per output channel, round to nearest"),
    "rtn": Method("quantize", False,
                  lambda m, c: quantize.quantize_rtn(m, c, c.cfg.bits, c.cfg.group_size, c.cfg.symmetric),
                  "int-b weights per group, round to nearest"),
    "gptq": Method("quantize", True, quantize.quantize_gptq, "int-b weights per group, GPTQ error correction"),
    "awq": Method("quantize", True, smooth.quantize_awq, "int-b weights per group after AWQ's activation-aware scaling"),
    "smoothquant": Method("quantize", True, smooth.quantize_smoothquant,
                          "int8 weights per channel and int8 activations per token after SmoothQuant scaling"),
    "magnitude": Method("prune", False, prune.prune_magnitude, "smallest |W| of each layer set to 0"),
    "wanda": Method("prune", True, prune.prune_wanda, "smallest |W| x ||X|| of each row set to 0"),
    "sparsegpt": Method("prune", True, prune.prune_sparsegpt, "OBS pruning with the kept weights updated"),
    "svd": Method("lowrank", False, lowrank.factorize, "truncated SVD: each Linear as two smaller ones"),
    "tie_embeddings": Method("share", False, sharing.tie_embeddings, "one matrix for embedding and output head"),
    "share_layers": Method("share", False, sharing.share_layers, "groups of consecutive blocks share weights"),
}
ORDER = {"distill": -1, "share": 0, "prune": 1, "lowrank": 1, "quantize": 2}
GROUPED = ("rtn", "gptq", "awq")  # methods that use group_size


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


def check_chain(methods: list[str]) -> None:
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise StageError(f"compress.methods={methods}: unknown method(s) {unknown}; choose from {', '.join(METHODS)}"
                         if unknown else "compress.methods is empty: name at least one method")
    kinds = [METHODS[m].kind for m in methods]
    problems = []
    if len(set(methods)) != len(methods):
        problems.append("a method appears twice")
    for kind in ("prune", "quantize"):
        if kinds.count(kind) > 1:
            problems.append(f"more than one {kind} method")
    if [ORDER[k] for k in kinds] != sorted(ORDER[k] for k in kinds):
        problems.append("order must be weight sharing, then pruning or low-rank, then quantization")
    if "lowrank" in kinds and len({k for k in kinds if k != "share"}) > 1:
        problems.append("svd combines with neither pruning nor quantization (its factors are new layers)")
    if "share_layers" in methods and set(kinds) - {"share"}:
        problems.append("share_layers combines only with tie_embeddings (compressing each layer would undo sharing)")
    if problems:
        raise StageError(f"compress.methods={methods}: " + "; ".join(problems))


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
