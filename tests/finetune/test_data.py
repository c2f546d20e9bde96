"""Bad records are set aside with a reason and counted; unusable data is a clear error."""
import json

import pytest

from pipeline.core.errors import StageError
from pipeline.finetune import Config
from pipeline.finetune.data import load
from tests.finetune.helpers import run_finetune

U, A = "user", "assistant"


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _conv(*turns):
    return {"messages": [{"role": r, "content": c} for r, c in turns]}


def test_bad_conversations_are_counted_by_reason_and_the_rest_trains(base_dir, tmp_path):
    good = [_conv((U, f"What is {i} + 1?"), (A, str(i + 1))) for i in range(20)]
    bad = [_conv((U, "hello")),                                      # no assistant turn
           _conv(("robot", "hi"), (A, "hi")),                        # unknown role
           _conv((U, ""), (A, "x")),                                 # empty message
           {"text": "not a conversation"},                           # missing field
           _conv((U, "word " * 200), (A, "too long for the context"))]
    data = _jsonl(tmp_path / "chats.jsonl", good + bad)
    stats = run_finetune(base_dir, tmp_path / "out", data=str(data), heldout_examples=0)
    assert stats["dropped"] == {"no_assistant_turn": 1, "unknown_role": 1, "empty_message": 1,
                                "missing_field": 1, "too_long": 1}
    assert stats["examples_in"] == 25 == stats["examples_kept"] + sum(stats["dropped"].values())


def test_bad_preference_pairs_are_counted(tmp_path):
    rows = [{"prompt": "2 + 2?", "chosen": "4", "rejected": "5"},
            {"prompt": "2 + 3?", "chosen": "5", "rejected": "5"},     # identical
            {"prompt": "2 + 4?", "chosen": "", "rejected": "7"},      # empty
            {"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "hello"}],
             "rejected": [{"role": "assistant", "content": "go away"}]}]
    ex = load(Config(method="dpo", data=str(_jsonl(tmp_path / "p.jsonl", rows))))
    assert dict(ex.dropped) == {"identical_pair": 1, "empty_completion": 1}
    assert len(ex.train) + len(ex.validation) == 2 and ex.records_in == 4


def test_no_usable_record_is_an_error_naming_the_file(tmp_path):
    data = _jsonl(tmp_path / "x.jsonl", [_conv((U, "only a question"))])
    with pytest.raises(StageError, match=r"x.jsonl.*no usable conversation.*no_assistant_turn"):
        load(Config(data=str(data)))


def test_unknown_method_and_missing_file_are_clear_errors(tmp_path):
    with pytest.raises(StageError, match="finetune.method must be one of"):
        Config(method="rlhf")
    with pytest.raises(StageError, match=r"finetune.dpo.rejected must be given\|policy, got 'model'"):
        Config(method="dpo", dpo={"rejected": "model"})
    with pytest.raises(StageError, match="no such file"):
        load(Config(data=str(tmp_path / "missing.jsonl")))


def test_an_unreachable_hub_dataset_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(StageError, match="cannot load the Hugging Face dataset"):
        load(Config(data="hf:lmdag-test/does-not-exist"))
