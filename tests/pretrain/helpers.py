"""Running pretrain on the test corpus with the ci recipe."""
from __future__ import annotations

from pathlib import Path

from pipeline.config import compose
from pipeline.core.dag import stage_config
from pipeline.stage import execute

CI = ["experiment=ci", "tokenize.vocab_size=320", "train.progress=false", "train.threads=1"]


def pretrain_subtree(*overrides: str) -> dict:
    """The ci recipe's pretrain subtree, with test-sized overrides."""
    return stage_config(compose([*CI, *overrides]), "pretrain")


def run_pretrain(token_dir: Path, out: Path, *overrides: str) -> dict:
    return execute("pretrain", pretrain_subtree(*overrides), {"tokens": token_dir}, out)
