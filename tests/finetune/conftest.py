"""A tiny tokenizer that knows the generated tasks' words and a small random model on it,
built once per session: fine-tuning tests run in seconds."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from pipeline.core.docs import doc, write_table
from pipeline.core.tasks import generated, safety
from pipeline.stage import execute

torch.set_num_threads(1)


def _corpus(rng: random.Random) -> list[str]:
    """Text with the tasks' questions, answers and the safety set in it, so BPE merges them."""
    texts = []
    for i in range(30):
        rows = [r for t in generated.TASKS for r in generated.examples(t, "train", 6, seed=i)]
        texts.append(" ".join(f"{r['question']} {r['answer']}" for r in rows))
    texts.append(" ".join(safety.harmful_requests("train") + [q + " " + a for q, a in safety.HARMLESS]))
    return texts


@pytest.fixture(scope="session")
def token_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("finetune-data")
    rows = [doc(f"doc{i}", t, "tasks") for i, t in enumerate(_corpus(random.Random(0)))]
    write_table(root / "docs" / "shard-00000.parquet", rows)
    execute("tokenize", {"vocab_size": 400, "n_sentinels": 2, "workers": 1, "val_fraction": 0.1},
            {"docs": root / "docs"}, root / "tokenize")
    return root / "tokenize"


def tiny_model_dir(token_dir: Path, out: Path, seed: int = 0, **overrides) -> Path:
    from pipeline.model import Config
    from pipeline.model.io import save_model_dir
    from pipeline.model.transformer import Transformer

    torch.manual_seed(seed)
    cfg = Config(**{"vocab_size": 400, "n_layer": 2, "n_head": 4, "n_kv_head": 2, "d_model": 64, "d_mlp": 128,
                    "max_seq_len": 96, "kernels": "torch", **overrides})
    save_model_dir(out, Transformer(cfg), token_dir / "tokenizer.json", token_dir / "meta.json")
    return out


@pytest.fixture(scope="session")
def base_dir(token_dir, tmp_path_factory) -> Path:
    return tiny_model_dir(token_dir, tmp_path_factory.mktemp("base") / "model")
