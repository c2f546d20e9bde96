"""Running the finetune stage at test size."""
from __future__ import annotations

from pathlib import Path

from pipeline.stage import execute

TINY = {"train_examples": 200, "heldout_examples": 8, "eval_max_new_tokens": 12,
        "train": {"steps": 6, "batch_size": 8, "warmup_steps": 0, "eval_every": 3, "checkpoint_every": 3,
                  "log_every": 1, "progress": False, "threads": 1, "compile": False}}


def config(**overrides) -> dict:
    cfg = {**TINY, **overrides}
    cfg["train"] = {**TINY["train"], **overrides.get("train", {})}
    return cfg


def run_finetune(model_dir: Path, out: Path, **overrides) -> dict:
    extra = overrides.pop("inputs", {})
    return execute("finetune", config(**overrides), {"model": model_dir, **extra}, out)
