"""The compression methods by name: what kind each is, whether it needs calibration text, and
the order a chain must keep — checked when a config is built, so this module imports no torch
(methods.py holds the implementations)."""
from __future__ import annotations

from pipeline.core.errors import StageError

# name -> (kind, calibrated: reads the tokenize directory's train tokens, what it does)
KINDS = {
    "distill": ("distill", False, "a smaller student trained on the teacher's soft targets (shared training loop)"),
    "int8": ("quantize", False, "int8 weights per output channel, round to nearest"),
    "rtn": ("quantize", False, "int-b weights per group, round to nearest"),
    "gptq": ("quantize", True, "int-b weights per group, GPTQ error correction"),
    "awq": ("quantize", True, "int-b weights per group after AWQ's activation-aware scaling"),
    "smoothquant": ("quantize", True, "int8 weights per channel and int8 activations per token after SmoothQuant scaling"),
    "magnitude": ("prune", False, "smallest |W| of each layer set to 0"),
    "wanda": ("prune", True, "smallest |W| x ||X|| of each row set to 0"),
    "sparsegpt": ("prune", True, "OBS pruning with the kept weights updated"),
    "svd": ("lowrank", False, "truncated SVD: each Linear as two smaller ones"),
    "tie_embeddings": ("share", False, "one matrix for embedding and output head"),
    "share_layers": ("share", False, "groups of consecutive blocks share weights"),
}
ORDER = {"distill": -1, "share": 0, "prune": 1, "lowrank": 1, "quantize": 2}
GROUPED = ("rtn", "gptq", "awq")  # methods that use group_size


def check_chain(methods: list[str]) -> None:
    unknown = [m for m in methods if m not in KINDS]
    if unknown or not methods:
        raise StageError(f"compress.methods={methods}: unknown method(s) {unknown}; choose from {', '.join(KINDS)}"
                         if unknown else "compress.methods is empty: name at least one method")
    kinds = [KINDS[m][0] for m in methods]
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
