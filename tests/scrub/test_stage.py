"""The scrub stage: per-type counts, bad input accounted for, the labelled set's targets, the CLI."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.docs import doc, iter_docs, read_rows, write_table
from pipeline.stage import execute

REPO = Path(__file__).resolve().parents[2]
PROSE = "The committee met on Tuesday to discuss the budget and agreed on a second review. "


def make_input(path: Path, rows: list[dict], shard_docs: int = 3) -> Path:
    for i in range(0, len(rows), shard_docs):
        write_table(path / f"shard-{i // shard_docs:05d}.parquet", rows[i:i + shard_docs])
    (path / "stats.json").write_text("{}")
    return path


def test_stage_counts_types_and_accounts_for_bad_input(tmp_path):
    rows = [
        doc("a", PROSE + "Write to jane.roe@mail.ucsc.edu or call (415) 555-0134.", "web/x"),
        doc("b", PROSE * 3, "web/x"),
        doc("c", "", "web/x"),
        doc("d", " \n\t ", "web/x"),
        doc("e", "Email: ann@mail.ucsc.edu\nTel: +44 20 7946 0958\n8.8.8.8", "web/x"),  # only PII
        doc("f", "\x00\x01\xff\x89PNG\r\n" * 500 + "4111 1111 1111 1111", "web/x"),  # binary junk
        doc("g", "这是中文。联系 wang@mail.ucsc.edu。", "web/zh"),
        doc("h", (PROSE + "Server 8.8.4.4 answered. ") * 80_000, "web/x"),  # ~9 MB
        doc("i", "password=hunter22 in the code", "code/x"),
    ]
    stats = execute("scrub", {"skip_sources": ["code/*"]}, {"docs": make_input(tmp_path / "in", rows)}, tmp_path / "out")
    assert stats["docs_in"] == 9 and stats["docs_kept"] + sum(stats["dropped"].values()) == 9
    assert stats["dropped"] == {"empty": 2, "only_pii": 1}
    assert stats["pii"] == {"email": 3, "phone": 2, "ip_address": 80_001, "credit_card": 1}
    assert stats["docs_with_pii"] == 5 and stats["docs_with_pii_by_source"] == {"web/x": 4, "web/zh": 1}
    kept = {r["id"]: r for r in iter_docs(tmp_path / "out")}
    assert kept["a"]["text"].endswith("Write to <EMAIL> or call <PHONE>.")
    assert json.loads(kept["a"]["meta"]) == {"pii": {"email": 1, "phone": 1}}
    assert kept["g"]["text"] == "这是中文。联系 <EMAIL>。"
    assert kept["i"]["text"] == "password=hunter22 in the code"  # skipped source
    assert kept["f"]["text"].endswith("<CREDIT_CARD>")
    dropped = [r for p in sorted((tmp_path / "out" / "dropped").glob("*.parquet")) for r in read_rows(p)]
    only = [r for r in dropped if r["reason"] == "only_pii"][0]
    assert "@" not in only["text"] and "<EMAIL>" in only["text"]  # dropped/ keeps no PII either


@pytest.mark.slow  # generates 1,000 Faker documents
def test_labelled_set_meets_the_targets():
    from benchmarks import pii_testset

    docs = pii_testset.generate(1000)
    result = pii_testset.score(docs, pii_testset.ours())
    assert result["recall"] >= 0.99, pii_testset.table(result)
    assert result["decoy_fp_rate"] <= 0.01, pii_testset.table(result)
    assert all(r["recall"] >= 0.97 and r["precision"] >= 0.97 for r in result["types"].values()), pii_testset.table(result)
    assert len(result["types"]) == 10


def test_labelled_set_is_deterministic_and_spans_are_exact():
    from benchmarks import pii_testset

    a, b = pii_testset.generate(30), pii_testset.generate(30)
    assert [d.text for d in a] == [d.text for d in b]
    for d in a:
        for start, end, kind in d.spans:
            assert d.text[start:end].strip() == d.text[start:end] and end > start


@pytest.mark.slow  # a CLI run composes the config and reads the file with collect
def test_command_line_on_user_files(tmp_path):
    src = tmp_path / "posts.jsonl"
    src.write_text(json.dumps({"text": PROSE + "Mail bob@mail.ucsc.edu, bob@mail.ucsc.edu and eve@cs.cmu.edu."}) + "\n")
    out = tmp_path / "clean.parquet"
    proc = subprocess.run([sys.executable, "-m", "pipeline", "scrub", f"in={src}", f"out={out}", "replacement=pseudonym"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import pyarrow.parquet as pq

    (row,) = pq.read_table(out).to_pylist()
    assert row["text"].endswith("Mail person1@example.com, person1@example.com and person2@example.com.")
    stats = json.loads(Path(str(out) + ".stats.json").read_text())
    assert stats["pii"] == {"email": 3}
