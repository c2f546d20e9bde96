"""compress: a model in, a smaller model out — quantization, pruning, low-rank, weight sharing,
distillation.

One step = one method or a chain (methods.py lists them: int8, rtn, gptq, awq, smoothquant,
magnitude, wanda, sparsegpt, svd, tie_embeddings, share_layers, distill), e.g.
``methods: [gptq]``, ``methods: [wanda, gptq]`` with ``pattern: "2:4"``, ``methods: [distill, int8]``.
Calibrated methods read ``calibration_samples`` windows of the tokenize directory's train
tokens; distill trains a student with the shared training loop (distill.py).

Writes a model directory (pipeline/model/io.py: ``load_model`` rebuilds the quantized /
low-rank layers strictly) plus ``compression.json`` (methods, settings, which layers were
replaced and how, per-layer errors) and ``hf/`` (compressed-tensors for quantized models, a
plain Llama checkpoint otherwise: export.py). stats.json has size on disk, bits per weight,
parameters and nonzeros, held-out perplexity and bits-per-byte (pretraining's protocol), CPU
latency per token and compression time — for the variant and for the base model it came from.

    python -m pipeline compress in=results/pretrain/<key> in.tokens=results/tokenize/<key> out=int4/ methods=[gptq]

From Python:  execute("compress", {"methods": ["gptq"]}, {"model": model_dir, "tokens": tok_dir}, out)
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.errors import StageError
from pipeline.core.step import Input, unkeyed
from pipeline.core.train.config import Config as TrainConfig

INPUTS = {
    "model": Input("a model directory (pipeline/model/io.py): base or fine-tuned"),
    "tokens": Input("a tokenize directory: calibration text (train) and held-out bits-per-byte (val)",
                    optional=True),
}
VERSION = "1"

PATTERNS = ("unstructured", "2:4", "4:8")


@dataclass
class Config:
    # Applied in order (methods.py): e.g. [int8], [gptq], [wanda, gptq], [svd], [share_layers].
    methods: list[str] = field(default_factory=lambda: ["int8"])
    # rtn / gptq / awq: bits per weight, 2..8, and input columns sharing one scale (0 = one
    # per output channel). 4 bits in groups of 128 is llm-compressor's W4A16; int8 and
    # smoothquant are always 8-bit per channel.
    bits: int = 4
    group_size: int = 128
    # Symmetric grids have no zero point (what W4A16 uses); asymmetric ones fit skewed rows.
    symmetric: bool = True
    # GPTQ: columns in order of decreasing Hessian diagonal (groups stay in the original order).
    act_order: bool = False
    # GPTQ / SparseGPT: Hessian damping as a fraction of its mean diagonal, and the number of
    # columns finished before the rest of the weight is updated (the papers' 0.01 and 128).
    damp: float = 0.01
    block_size: int = 128
    # magnitude / wanda / sparsegpt: the fraction of weights set to 0, or a fixed n:m pattern
    # (2:4 keeps 2 of every 4 and ignores `sparsity`).
    sparsity: float = 0.5
    pattern: str = "unstructured"
    # svd: a fixed rank, or (rank 0) the smallest keeping this fraction of the spectrum's energy.
    rank: int = 0
    energy: float = 0.9
    # awq: grid points for the scale exponent in [0, 1) (the paper's 20).
    awq_grid: int = 20
    # smoothquant: migration strength, how much of the activations' range moves into the weights;
    # smooth_grid > 0 instead searches it per group over that many steps of [0, 1] and no
    # smoothing, by the group's W8A8 output error on calibration rows.
    smooth_alpha: float = 0.5
    smooth_grid: int = 0
    # tie_embeddings: average | embed | lm_head (which matrix the tied model keeps).
    tie: str = "average"
    # share_layers: blocks per group, and how the group's shared weights are chosen (mean | first).
    share_group: int = 2
    share_choose: str = "mean"
    # distill: the student is the teacher's model config with these fields changed (e.g.
    # {n_layer: 2}), started from the teacher's evenly spaced blocks (teacher_layers, as
    # DistilBERT) or from scratch (random), and trained by the shared loop with `train` on
    # kl_weight x T^2 x KL(teacher/T || student/T) + (1 - kl_weight) x next-token CE.
    student: dict[str, Any] = field(default_factory=lambda: {"n_layer": 1})
    student_init: str = "teacher_layers"
    temperature: float = 2.0
    kl_weight: float = 0.5
    train: TrainConfig = field(default_factory=TrainConfig)
    # Calibration windows (train split) and their length (0 = the model's context length).
    calibration_samples: int = 128
    calibration_seq_len: int = 0
    calibration_batch_size: int = 16
    seed: int = 1234
    # Held-out scoring as pretraining's final evaluation (windows spread over val; 0 = all).
    eval_windows: int = 512
    eval_batch_size: int = 16
    # Latency: greedy tokens generated after a prompt of this many validation tokens.
    latency_tokens: int = 32
    latency_prompt: int = 32
    threads: int = unkeyed(0)  # torch threads (0 = torch's default)
    progress: bool = unkeyed(True)

    def __post_init__(self):
        from pipeline.compress.chain import check_chain

        self.methods = list(self.methods)
        check_chain(self.methods)
        checks = [
            ("bits", 2 <= self.bits <= 8, "2..8"),
            ("group_size", self.group_size >= 0, ">= 0 (0 = per output channel)"),
            ("damp", 0 < self.damp < 1, "in (0, 1)"),
            ("block_size", self.block_size >= 1, ">= 1"),
            ("sparsity", 0 <= self.sparsity < 1, "in [0, 1)"),
            ("pattern", self.pattern in PATTERNS, " | ".join(PATTERNS)),
            ("rank", self.rank >= 0, ">= 0 (0 = choose by energy)"),
            ("energy", 0 < self.energy <= 1, "in (0, 1]"),
            ("awq_grid", self.awq_grid >= 1, ">= 1"),
            ("smooth_alpha", 0 <= self.smooth_alpha <= 1, "in [0, 1]"),
            ("smooth_grid", self.smooth_grid >= 0, ">= 0 (0 = the fixed smooth_alpha)"),
            ("tie", self.tie in ("average", "embed", "lm_head"), "average | embed | lm_head"),
            ("share_group", self.share_group >= 2, ">= 2"),
            ("share_choose", self.share_choose in ("mean", "first"), "mean | first"),
            ("calibration_samples", self.calibration_samples >= 1, ">= 1 (an empty calibration set calibrates nothing)"),
            ("calibration_seq_len", self.calibration_seq_len >= 0, ">= 0"),
            ("eval_windows", self.eval_windows >= 0, ">= 0"),
            ("latency_tokens", self.latency_tokens >= 1, ">= 1"),
            ("student_init", self.student_init in ("teacher_layers", "random"), "teacher_layers | random"),
            ("temperature", self.temperature > 0, "> 0"),
            ("kl_weight", 0 <= self.kl_weight <= 1, "in [0, 1]"),
        ]
        for key, ok, allowed in checks:
            if not ok:
                raise StageError(f"compress.{key}={getattr(self, key)!r}: must be {allowed}")
        if isinstance(self.train, dict):
            self.train = TrainConfig(**self.train)
        if "distill" in self.methods:
            self.train.validate()


def _student_on_meta(teacher, cfg: Config):
    """The student's shapes (no memory), so every check runs on the layers that get compressed."""
    import torch

    from pipeline.compress.distill import check_init, student_config
    from pipeline.model import Transformer

    student = student_config(teacher.cfg, dict(cfg.student))
    check_init(teacher.cfg, student, cfg.student_init)
    with torch.device("meta"):
        return Transformer(student)


def variant_label(cfg: Config) -> str:
    """A short name for the report: each method with the settings that tell variants apart."""
    parts = []
    for m in cfg.methods:
        if m in ("rtn", "gptq", "awq"):
            m += f" int{cfg.bits}" + (f" g{cfg.group_size}" if cfg.group_size else "") + ("" if cfg.symmetric else " asym")
        elif m in ("magnitude", "wanda", "sparsegpt"):
            m += f" {cfg.pattern}" if cfg.pattern != "unstructured" else f" {cfg.sparsity:.0%}"
        elif m == "svd":
            m += f" rank {cfg.rank}" if cfg.rank else f" energy {cfg.energy:g}"
        elif m == "smoothquant":
            m += f" a={cfg.smooth_alpha:g}" if not cfg.smooth_grid else f" a searched /{cfg.smooth_grid}"
        elif m == "share_layers":
            m += f" x{cfg.share_group}"
        elif m == "distill":
            m += " " + ",".join(f"{k}={v}" for k, v in sorted(cfg.student.items()))
        parts.append(m)
    return " + ".join(parts)


def _settings(cfg: Config) -> dict:
    return {k: v for k, v in asdict(cfg).items() if k not in ("threads", "progress")}


def _calibration(cfg: Config, inputs: dict[str, Path], compressed, log):
    """Calibration token windows when a method needs them (None otherwise), checked first."""
    from pipeline.compress.calibrate import calibration_ids
    from pipeline.compress.methods import METHODS

    calibrated = [m for m in cfg.methods if METHODS[m].calibrated]
    if not calibrated:
        return None
    if not inputs.get("tokens"):
        raise StageError(f"compress.methods={cfg.methods}: {calibrated} need calibration text: wire the "
                         "'tokens' input to a tokenize directory")
    limit = compressed.cfg.max_seq_len
    ids = calibration_ids(Path(inputs["tokens"]), cfg.calibration_samples,
                          min(cfg.calibration_seq_len or limit, limit), cfg.seed)
    log.info("calibration: %d windows of %d train tokens", *ids.shape)
    return ids


def _save(out: Path, model, model_dir: Path, cfg: Config, ctx) -> dict:
    """The model directory, compression.json and hf/; -> the replaced layers and the export's note."""
    from pipeline.compress import export
    from pipeline.model.io import COMPRESSION, TOKENIZER, TOKENIZER_META, save_model_dir
    from pipeline.model.quantized import layer_entry

    layers = {n: e for n, m in model.named_modules() if (e := layer_entry(m)) is not None}
    layout = {"methods": cfg.methods, "settings": _settings(cfg), "layers": layers, **ctx.layout,
              "errors": ctx.errors}
    meta = model_dir / TOKENIZER_META
    save_model_dir(out, model, model_dir / TOKENIZER, meta if meta.is_file() else None, hf=False)
    (out / COMPRESSION).write_text(json.dumps(layout, indent=1))
    return {"layers_replaced": len(layers), "hf_export": export.export(model, out / TOKENIZER, out / "hf")}


def run(cfg: Config, inputs: dict[str, Path], out: Path, log) -> dict:
    import torch

    from pipeline.compress import measure
    from pipeline.compress.methods import METHODS, Context, check_layers
    from pipeline.core.tokens import TokenData
    from pipeline.model.io import COMPRESSION, load_model

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    model_dir = Path(inputs["model"])
    if (model_dir / COMPRESSION).is_file():
        raise StageError(f"compress: {model_dir} is already compressed ({COMPRESSION}); "
                         "chain the methods in one step (compress.methods=[...]) on the uncompressed model")
    model = load_model(model_dir)
    if getattr(model.cfg, "virtual_tokens", 0):
        raise StageError(f"compress: {model_dir} has learned prompt/prefix tokens (prompt tuning); the "
                         "calibration pass and the hf/ export do not model them: compress the base model")
    compressed = _student_on_meta(model, cfg) if "distill" in cfg.methods else model
    check_layers(compressed, cfg)
    ids = _calibration(cfg, inputs, compressed, log)
    data = TokenData(inputs["tokens"]) if inputs.get("tokens") else None

    base = measure.measure(model, model_dir, data, cfg)
    log.info("base: %s", json.dumps(base))
    ctx = Context(cfg=cfg, ids=ids, inputs=inputs, out=out, log=log)
    started = time.time()
    for name in cfg.methods:
        log.info("%s: %s", name, METHODS[name].what)
        with torch.no_grad() if name != "distill" else contextlib.nullcontext():
            model = METHODS[name].apply(model, ctx) or model
    compression_s = time.time() - started
    saved = _save(out, model, model_dir, cfg, ctx)

    variant = measure.measure(load_model(out), out, data, cfg)  # what was written, loaded as readers load it
    stats = {"methods": cfg.methods, "label": variant_label(cfg), "compression_s": round(compression_s, 3), **variant, "base": base,
             "size_ratio": round(variant["size_bytes"] / base["size_bytes"], 4), **saved}
    if data is not None:
        stats["bits_per_byte_increase"] = variant["val_bits_per_byte"] - base["val_bits_per_byte"]
        stats["perplexity_increase"] = variant["val_perplexity"] - base["val_perplexity"]
    log.info("variant: %s", json.dumps({k: v for k, v in stats.items() if k != "base"}, default=str))
    return stats
