"""The report's tokenizer section reads a tokenize stage directory."""
import dataclasses
import json

from pipeline.report.blocks import Context, Pre, Table, render_markdown
from pipeline.report.sections import tokenizer
from pipeline.stage import execute
from pipeline.tokenize import Config
from tests.tokenize.synthetic import make_corpus


def test_section_shows_the_figures_and_a_tokenized_sample(tmp_path):
    make_corpus(tmp_path / "collect", n_docs=20)
    out = tmp_path / "results" / "tokenize" / "abc123abc123"
    cfg = Config(vocab_size=300, n_sentinels=1, workers=1, val_fraction=0.2)
    stats = execute("tokenize", dataclasses.asdict(cfg), {"docs": tmp_path / "collect"}, out)
    ctx = Context(points=[{"name": "p0", "steps": {"tokenize": {"stage": "tokenize", "key": "abc123abc123", "inputs": {}}}}], results=tmp_path / "results",
                  out=tmp_path / "report", cfg=None)
    blocks = tokenizer.render(ctx)
    table = next(b for b in blocks if isinstance(b, Table))
    assert table.rows[0][:3] == ["abc123abc123", "tokenize", 300]  # key, step, vocab
    assert table.rows[0][8] == stats["bytes_per_token_val"]
    sample = next(b for b in blocks if isinstance(b, Pre)).text
    meta = json.loads((out / "meta.json").read_text())
    assert sample.count("|") == len(meta["sample"]["ids"]) - 1 > 10  # one piece per token
    assert sample.split("|")[0] == meta["sample"]["pieces"][0]
    assert "Tokenizer" in render_markdown("t", blocks)


def test_section_is_empty_when_the_stage_has_not_run(tmp_path):
    ctx = Context(points=[{"name": "p0", "steps": {}}], results=tmp_path, out=tmp_path, cfg=None)
    assert tokenizer.render(ctx) == []
