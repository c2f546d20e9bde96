"""A tiny tokenized corpus (built once per session) and helpers to run pretrain on it."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from pipeline.core.docs import doc, write_table
from pipeline.stage import execute

torch.set_num_threads(1)

SUBJECTS = ["the cat", "a dog", "my friend", "the old man", "the river", "our teacher", "the king"]
VERBS = ["sees", "likes", "finds", "follows", "remembers", "carries", "watches"]
OBJECTS = ["the ball", "a small house", "the green field", "an apple", "the city", "the moon"]


def english_like(n_sentences: int, rng: random.Random) -> str:
    """Sentences from a tiny grammar: learnable in a few dozen steps, real words for BPE."""
    return " ".join(f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(VERBS)} {rng.choice(OBJECTS)}."
                    for _ in range(n_sentences))


@pytest.fixture(scope="session")
def token_dir(tmp_path_factory) -> Path:
    """A tokenize stage directory (vocab 320) over ~80 KB of grammar text."""
    root = tmp_path_factory.mktemp("pretrain-data")
    rng = random.Random(0)
    rows = [doc(f"doc{i}", english_like(60, rng), "grammar") for i in range(40)]
    collect = root / "collect"
    write_table(collect / "shard-00000.parquet", rows)
    (collect / "stats.json").write_text("{}")  # marks it complete, as a finished stage
    execute("tokenize", {"vocab_size": 320, "n_sentinels": 4, "workers": 1, "val_fraction": 0.1},
            {"docs": collect}, root / "tokenize")
    return root / "tokenize"
