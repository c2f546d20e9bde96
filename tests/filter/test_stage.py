"""The filter stage run the three ways, on bad input, with per-source exemptions."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.docs import doc, iter_docs, read_rows, shard_paths, write_table
from pipeline.filter import Config, judge
from pipeline.core.errors import StageError
from pipeline.stage import execute

from tests.filter.test_rules import PROSE

REPO = Path(__file__).resolve().parents[2]
GERMAN = ("Die Kommission traf sich am Dienstag, um den Haushalt zu besprechen. Die Mitglieder waren sich einig, "
          "dass der Plan mehr Einzelheiten braucht und dass die Stadt von einer zweiten Prüfung profitieren würde. ") * 3
CODE = "def add(a, b):\n    return a + b\n\n\nclass Point:\n    x: int = 0\n    y: int = 0\n" * 3


def make_input(path: Path, rows: list[dict], shard_docs: int = 4) -> Path:
    for i in range(0, len(rows), shard_docs):
        write_table(path / f"shard-{i // shard_docs:05d}.parquet", rows[i:i + shard_docs])
    (path / "stats.json").write_text("{}")
    return path


def row(i, text, source="web/test"):
    return doc(f"d{i}", text, source, {"n": i})


def test_stage_accounts_for_every_document_and_names_reasons(tmp_path):
    rows = [row(0, PROSE), row(1, ""), row(2, "   \n\t "), row(3, GERMAN), row(4, "\x00\x01\xff\x89PNG junk " * 40),
            row(5, "这是一个中文句子，用来测试语言过滤。" * 20), row(6, CODE, "code/python"), row(7, PROSE, "code/python"),
            row(8, (PROSE + "\n") * 23_000)]  # a 10 MB document
    inp = make_input(tmp_path / "in", rows)
    stats = execute("filter", {"workers": 1}, {"docs": inp}, tmp_path / "out")
    assert stats["docs_in"] == 9 and stats["docs_kept"] + sum(stats["dropped"].values()) == 9
    kept = {r["id"]: r for r in iter_docs(tmp_path / "out")}
    assert set(kept) == {"d0", "d6", "d7"}  # code is exempt from the prose rules by default
    dropped = {r["id"]: r["reason"] for p in sorted((tmp_path / "out" / "dropped").glob("*.parquet")) for r in read_rows(p)}
    assert dropped["d1"] == dropped["d2"] == "empty"
    assert dropped["d3"] == "language.not_allowed" and dropped["d5"] == "language.not_allowed"
    assert dropped["d4"].startswith(("language.", "gopher_quality."))
    assert dropped["d8"] == "gopher_quality.max_doc_words"
    assert json.loads(kept["d0"]["meta"]) == {"n": 0, "lang": "en", "lang_score": pytest.approx(0.9, abs=0.1)}
    assert stats["source_docs_in"] == {"web/test": 7, "code/python": 2}
    assert stats["bytes_dropped"]["empty"] == 6 and sum(stats["bytes_dropped"].values()) > 10_000_000
    assert (tmp_path / "out" / "stats.json").is_file()


def test_skip_sources_and_disabled_groups(tmp_path):
    cfg = Config()
    code = row(0, CODE, "code/python")
    assert judge(code, cfg)[1] is None
    cfg.gopher_quality.skip_sources = []
    assert judge(code, cfg)[1] == "gopher_quality.min_doc_words"
    cfg.gopher_quality.enabled = False
    assert judge(code, cfg)[1] is None
    cfg = Config()
    cfg.language.languages = ["de"]
    # German passes language ID, then meets Gopher's English stop words (set stop_words for German).
    assert judge(row(1, GERMAN), cfg)[1] == "gopher_quality.min_stop_words"
    assert judge(row(2, PROSE), cfg)[1] == "language.not_allowed"
    cfg.gopher_quality.stop_words = ["der", "die", "und", "dass"]
    assert judge(row(1, GERMAN), cfg)[1] == "gopher_repetition.dup_5_gram_frac"  # it is said three times
    cfg.language.min_score = 1.01
    assert judge(row(1, GERMAN), cfg)[1] == "language.low_score"


def test_toxicity_classifier_when_enabled(tmp_path):
    cfg = {"toxicity": {"enabled": True, "threshold": 0.5}, "language": {"enabled": False},
           "gopher_quality": {"enabled": False}, "gopher_repetition": {"enabled": False},
           "c4": {"enabled": False}, "fineweb": {"enabled": False}}
    rows = [row(0, "You are a stupid fucking idiot and I hate you, shut the fuck up."), row(1, PROSE)]
    stats = execute("filter", cfg, {"docs": make_input(tmp_path / "in", rows)}, tmp_path / "out")
    assert stats["dropped"] == {"toxicity.threshold": 1}
    (kept,) = iter_docs(tmp_path / "out")
    assert kept["id"] == "d1" and json.loads(kept["meta"])["toxicity"] < 0.5


def test_unknown_key_in_a_group_is_a_clear_error():
    with pytest.raises(StageError, match="filter.gopher_quality"):
        Config(gopher_quality={"min_doc_wrds": 3})


def test_a_failing_shard_names_itself(tmp_path, monkeypatch):
    inp = make_input(tmp_path / "in", [row(0, PROSE)])
    from pipeline.filter import apply

    def boom(*a, **k):
        raise ValueError("broken rule")

    monkeypatch.setattr(apply.gopher, "check_quality", boom)
    with pytest.raises(RuntimeError, match=r"shard .*shard-00000.parquet failed: ValueError: broken rule"):
        execute("filter", {}, {"docs": inp}, tmp_path / "out")


@pytest.mark.slow  # two CLI runs, each composing the config and reading the file with collect
def test_command_line_on_user_files(tmp_path):
    src = tmp_path / "docs.jsonl"
    src.write_text("\n".join(json.dumps({"text": t}) for t in [PROSE, "short", GERMAN]) + "\n")
    out = tmp_path / "kept.jsonl"
    proc = subprocess.run([sys.executable, "-m", "pipeline", "filter", f"in={src}", f"out={out}", "c4.enabled=false"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    assert [k["text"] for k in kept] == [PROSE]
    stats = json.loads((tmp_path / "kept.jsonl.stats.json").read_text())
    assert stats["dropped"] == {"gopher_quality.min_doc_words": 1, "language.not_allowed": 1}
    bad = subprocess.run([sys.executable, "-m", "pipeline", "filter", f"in={src}", f"out={out}", "c4.min_sentences=3"],
                         cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 1 and "min_sentences" in bad.stderr and "min_num_sentences" in bad.stderr
