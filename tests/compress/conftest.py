"""A tiny tokenized corpus and a briefly trained model on it (built once per session), so
compression methods are scored on a model whose weights and activations have structure."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from pipeline.core.docs import doc, write_table
from pipeline.stage import execute

torch.set_num_threads(1)

WORDS = ("the cat a dog my friend old man river our teacher king sees likes finds follows remembers "
         "carries watches ball small house green field apple city moon").split()


def sentences(n: int, rng: random.Random) -> str:
    return " ".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7))).capitalize() + "."
                    for _ in range(n))


@pytest.fixture(scope="session")
def token_dir(tmp_path_factory) -> Path:
    """A tokenize stage directory (vocab 320) over ~60 KB of word-salad text."""
    root = tmp_path_factory.mktemp("compress-data")
    rng = random.Random(0)
    collect = root / "collect"
    write_table(collect / "shard-00000.parquet", [doc(f"doc{i}", sentences(50, rng), "salad") for i in range(40)])
    (collect / "stats.json").write_text("{}")
    execute("tokenize", {"vocab_size": 320, "n_sentinels": 4, "workers": 1, "val_fraction": 0.1},
            {"docs": collect}, root / "tokenize")
    return root / "tokenize"


def train_model(token_dir: Path, out: Path, steps: int = 60, **overrides) -> Path:
    """AdamW on random windows: a few seconds on one thread, loss well below unigram."""
    from pipeline.core.tokens import TokenData
    from pipeline.model import Config, Transformer
    from pipeline.model.io import save_model_dir

    torch.manual_seed(0)
    data = TokenData(token_dir)
    cfg = Config(**{"vocab_size": 320, "n_layer": 2, "n_head": 4, "n_kv_head": 2, "d_model": 128, "d_mlp": 384,
                    "max_seq_len": 64, "kernels": "torch", **overrides})
    model = Transformer(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x, y = data.get_batch("train", 16, cfg.max_seq_len, generator=gen)
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return save_model_dir(out, model.eval(), token_dir / "tokenizer.json", token_dir / "meta.json", hf=False)


@pytest.fixture(scope="session")
def model_dir(token_dir, tmp_path_factory) -> Path:
    return train_model(token_dir, tmp_path_factory.mktemp("compress-model") / "model")
