"""The command line as the README shows it: help, dag, a wrong key, a stage on a user's model
directory (`evaluate in=… out=…`) and `evaluate_model` from Python, on ours and on a Hugging
Face directory."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def cli(*args, cwd=REPO, check=True):
    proc = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"pipeline {args} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc


def test_help_lists_stages_and_commands():
    out = cli("--help").stdout
    for word in ("collect", "filter", "evaluate", "dag", "status", "run-step", "model", "train"):
        assert f"  {word}" in out, word


def test_stage_help_shows_inputs_and_the_step_config():
    out = cli("evaluate", "--help").stdout
    assert "inputs:\n  model: a model directory" in out and "tokens:" in out and "(optional)" in out
    assert "tasks:" in out and "canaries:" in out
    assert "model:\n  vocab_size:" in cli("pretrain", "--help").stdout  # the DAG's ${model} is in it


def test_dag_prints_the_steps():
    out = cli("dag", "experiment=ci").stdout
    assert "evaluate" in out and "evaluate(model=pretrain, tokens=tokenize)" in out


def test_a_wrong_key_is_one_clear_line():
    proc = cli("filter", "gopher_quality.min_doc_wordz=3", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "lmdag error:" in proc.stderr and "min_doc_wordz" in proc.stderr and "Did you mean 'min_doc_words'" in proc.stderr


def test_unknown_step_names_the_steps():
    proc = cli("evalute", check=False)
    assert proc.returncode == 1 and "no step 'evalute' in the DAG" in proc.stderr and "evaluate" in proc.stderr


@pytest.fixture(scope="module")
def our_model(tmp_path_factory):
    """A model directory as pretrain writes it (pipeline/model/io.py), random weights."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers

    from pipeline.model import Config, Transformer
    from pipeline.model.io import save_model_dir

    d = tmp_path_factory.mktemp("ours")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.add_tokens([chr(c) for c in range(32, 127)])
    tok.add_special_tokens(["<|bos|>", "<|endoftext|>"])
    tok.save(str(d / "tokenizer.json"))
    torch.manual_seed(0)
    model = Transformer(Config(vocab_size=128, n_layer=1, n_head=2, n_kv_head=1, d_model=32, d_mlp=64, max_seq_len=64))
    meta = {"special_tokens": {"bos": tok.token_to_id("<|bos|>"), "eos": tok.token_to_id("<|endoftext|>")}}
    save_model_dir(d / "model", model, d / "tokenizer.json", meta)
    return d / "model"


@pytest.fixture
def mc_task_file(tmp_path):
    rows = [{"q": f"Pick {i}", "choices": ["a b", "c d e", "f"], "label": i % 3} for i in range(4)]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "t.yaml").write_text(
        "task: t\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: t.jsonl\noutput_type: multiple_choice\n"
        'test_split: test\ndoc_to_text: "{{q}}:"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: label\n')
    return tmp_path / "t.yaml"


@pytest.mark.parametrize("which", ["ours", "hf"])
def test_evaluate_runs_on_any_model_directory_from_the_command_line(which, our_model, mc_task_file, tmp_path):
    model = our_model if which == "ours" else our_model / "hf"
    out = tmp_path / "eval"
    cli("evaluate", f"in={model}", f"out={out}", f"tasks=[{mc_task_file}]", "limit=4")
    stats = json.loads((out / "stats.json").read_text())
    assert stats["model_source"] == ("native" if which == "ours" else "hf")
    assert stats["results"]["t"]["docs"] == 4 and 0 <= stats["results"]["t"]["metrics"]["acc"] <= 1
    assert (out / "results.json").is_file() and "heldout" not in stats["results"]  # no tokens given


def test_evaluate_model_from_python_matches_the_command_line(our_model, mc_task_file, tmp_path):
    from pipeline.evaluate import evaluate_model

    ours = evaluate_model(our_model, tasks=[str(mc_task_file)], limit=4, out=tmp_path / "py")
    theirs = evaluate_model(our_model / "hf", tasks=[str(mc_task_file)], limit=4)
    assert ours["results"]["t"]["metrics"] == pytest.approx(theirs["results"]["t"]["metrics"])
    assert (tmp_path / "py" / "results.json").is_file()
    with_canaries = evaluate_model(our_model, tasks=[], canaries={"count": 1, "candidates": 5})
    assert len(with_canaries["canaries"]["results"]) == 3  # one per default format


def test_evaluate_without_a_model_says_which_input(tmp_path):
    proc = cli("evaluate", f"out={tmp_path / 'o'}", check=False)
    assert proc.returncode == 1 and "evaluate reads ['model']" in proc.stderr and "in=PATH" in proc.stderr
    proc = cli("evaluate", f"in={tmp_path / 'nothing'}", f"out={tmp_path / 'o'}", check=False)
    assert proc.returncode == 1 and "no such file or directory" in proc.stderr
