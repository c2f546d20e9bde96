"""Fixtures: a tiny random Llama + BPE tokenizer (HF layout) and tiny lm-eval task files."""
import json
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from pipeline.evaluate.tiny import save_hf_model

    return save_hf_model(tmp_path_factory.mktemp("model"), max_length=32)


@pytest.fixture(scope="session")
def tiny_lm(tiny_model):
    from pipeline.evaluate.models import load_hf

    return load_hf(tiny_model, batch_size=4)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


MC_ROWS = [{"question": f"Which is best for the {w}?", "choices": ["the quick fox", "a lazy dog sleeping here", "numbers", "wisdom"],
            "label": i % 4} for i, w in enumerate("roof cage dog fox time age".split())]


@pytest.fixture
def mc_rows() -> list[dict]:
    return [dict(r) for r in MC_ROWS]


@pytest.fixture
def jsonl():
    return write_jsonl


@pytest.fixture
def mc_task(tmp_path) -> Path:
    write_jsonl(tmp_path / "mc.jsonl", MC_ROWS)
    (tmp_path / "mc.yaml").write_text(
        "task: mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: mc.jsonl\n"
        "output_type: multiple_choice\ntest_split: test\nfewshot_split: test\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: label\n')
    return tmp_path / "mc.yaml"


@pytest.fixture
def rolling_task(tmp_path) -> Path:
    rows = [{"text": "It was the best of times, it was the worst of times. " * (i + 1) + "The end."} for i in range(4)]
    write_jsonl(tmp_path / "roll.jsonl", rows)
    (tmp_path / "roll.yaml").write_text(
        "task: roll\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: roll.jsonl\n"
        'output_type: loglikelihood_rolling\ntest_split: test\ndoc_to_text: ""\ndoc_to_target: "{{text}}"\n')
    return tmp_path / "roll.yaml"
