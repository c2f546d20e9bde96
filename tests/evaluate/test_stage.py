"""The evaluate stage end to end on a tiny model and a hand-made tokenize directory, then its
report sections."""
import json
import logging
import shutil

import numpy as np
import pytest

from pipeline import evaluate as stage
from pipeline.core.canaries import CanaryConfig, generate
from pipeline.report.blocks import Context, Heading, Table, render_markdown


def _tokenize_dir(path, tiny_model, train_texts, val_texts):
    from tokenizers import Tokenizer

    path.mkdir()
    shutil.copy(tiny_model / "tokenizer.json", path / "tokenizer.json")
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    for split, texts in (("train", train_texts), ("val", val_texts)):
        ids = [tok.encode(t).ids for t in texts]
        np.concatenate([np.array(i, dtype=np.uint16) for i in ids]).tofile(path / f"{split}.bin")
        np.save(path / f"{split}.idx.npy", np.cumsum([0] + [len(i) for i in ids]))
    (path / "meta.json").write_text(json.dumps({"dtype": "uint16", "vocab_size": tok.get_vocab_size()}))
    (path / "stats.json").write_text("{}")
    return path


@pytest.fixture
def stage_inputs(tmp_path, tiny_model, mc_rows):
    pretrain = tmp_path / "pretrain"
    shutil.copytree(tiny_model, pretrain / "hf")  # a pretrain stage dir holds its HF export in hf/
    cfg = CanaryConfig(count=1, repeats=2, formats=["the secret code is {6}"], candidates=15)
    canary = generate(cfg)[0]["text"]
    train = [f"Some training text {i}. {canary}." for i in range(2)] + [
        "Question: Which is best for the roof? Answer: the quick fox jumps over the lazy dog"]
    val = ["It was the best of times, it was the worst of times.", "The quick brown fox."]
    return {"model": pretrain, "tokens": _tokenize_dir(tmp_path / "tok", tiny_model, train, val)}, cfg


def test_stage_scores_tasks_heldout_contamination_and_canaries(tmp_path, stage_inputs, mc_task, rolling_task):
    inputs, canaries = stage_inputs
    out = tmp_path / "out"
    out.mkdir()
    cfg = stage.Config(tasks=[str(mc_task), str(rolling_task)], limit=4, heldout_docs=2, contamination_ngram=5,
                       canaries=canaries, bootstrap_iters=20)
    stats = stage.run(cfg, inputs, out, logging.getLogger("test"))
    assert stats["model_source"] == "hf"
    assert set(stats["results"]) == {"heldout", "mc", "roll"}
    assert stats["results"]["heldout"]["docs"] == 2 and stats["results"]["heldout"]["metrics"]["bits_per_byte"] > 0
    assert stats["results"]["mc"]["docs"] == 4 and stats["results"]["mc"]["stderr"]["acc"] is not None
    assert stats["core"]["tasks"]["mc"]["random_baseline"] == 0.25
    # the first mc question ("Question: Which is best for the roof?") shares 5-grams with a training doc
    assert stats["contamination"]["mc"]["dirty"] >= 1
    assert stats["contamination"]["roll"]["dirty"] == 0
    [c] = stats["canaries"]["results"]
    assert c["in_training_data"] == 2 and 1 <= c["rank"] <= 16
    saved = json.loads((out / "results.json").read_text())
    assert saved["full"]["mc"]["samples"] and (out / "samples.jsonl").read_text().count('"task": "mc"') == 3

    # the report sections read the stage directory
    from pipeline.report.sections import eval_canaries, eval_contamination, evaluation, sweep_comparison

    results = tmp_path / "results"
    for name, key in (("a", "aaaaaaaaaaaa"), ("b", "bbbbbbbbbbbb")):
        d = results / "evaluate" / key
        shutil.copytree(out, d)
        (d / "stats.json").write_text(json.dumps(stats))
    entry = {"stage": "evaluate", "inputs": {"model": "pretrain"}}
    points = [{"name": "a", "overrides": ["x=1"], "steps": {"evaluate": {**entry, "key": "aaaaaaaaaaaa"}}},
              {"name": "b", "overrides": ["x=2"], "steps": {"evaluate": {**entry, "key": "bbbbbbbbbbbb"}}}]
    ctx = Context(points=points, results=results, out=tmp_path / "report", cfg=None)
    blocks = evaluation.render(ctx) + eval_contamination.render(ctx) + eval_canaries.render(ctx) + sweep_comparison.render(ctx)
    md = render_markdown("t", blocks)
    assert "CORE" in md and "| mc | acc |" in md and "Canary exposure" in md and "occur 2 times" in md
    sweep = [b for b in blocks if isinstance(b, Table) and b.headers[0] == "point"]
    assert len(sweep) == 1 and [r[0] for r in sweep[0].rows] == ["a", "b"]
    assert any(isinstance(b, Heading) and b.text.startswith("Contamination") for b in blocks)


def test_missing_model_is_a_clear_error(tmp_path):
    from pipeline.core.errors import StageError

    (tmp_path / "empty").mkdir()
    with pytest.raises(StageError, match="no model found"):
        stage.run(stage.Config(tasks=[]), {"model": tmp_path / "empty"}, tmp_path, logging.getLogger("t"))
