"""The dedup stage end to end: what it drops, what it records, bad input, the split steps, errors."""
import dataclasses
import json
import random
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from pipeline import dedup
from pipeline.core.docs import doc, iter_docs
from pipeline.core.plan import step_dir
from pipeline.core.errors import StageError
from pipeline.stage import execute
from tests.dedup.conftest import paragraph, write_corpus

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


def run_dedup(src, out, **overrides):
    subtree = {**dataclasses.asdict(dedup.Config()), **overrides}
    return execute("dedup", subtree, {"docs": src}, out)


def dropped_rows(out):
    return [r for p in sorted((out / "dropped").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]


def test_planted_copies_are_removed_and_clusters_recorded(planted, tmp_path):
    src, rows = planted
    stats = run_dedup(src, tmp_path / "out")
    assert stats["docs_in"] == 18 and stats["docs_kept"] == 12
    assert stats["dropped"] == {"exact_duplicate": 3, "near_duplicate": 3}
    dropped = {r["id"]: r["reason"] for r in dropped_rows(tmp_path / "out")}
    kept = {r["id"]: json.loads(r["meta"]) for r in iter_docs(tmp_path / "out")}
    # exactly one of each original/copy pair survives, whichever came first in the shuffled input
    assert set(kept) | set(dropped) == set(rows)
    assert {"exact_duplicate", "near_duplicate"} == set(dropped.values())
    # orig-00 has an exact copy and a near copy: one cluster of three
    trio = ["orig-00", "exact-of-00", "near-of-00"]
    metas = {r["id"]: json.loads(r["meta"]) for r in [*iter_docs(tmp_path / "out"), *dropped_rows(tmp_path / "out")]}
    assert len({metas[i]["dedup_cluster"] for i in trio}) == 1
    assert {metas[i]["dedup_cluster_size"] for i in trio} == {3}
    keeper = metas["orig-00"]["dedup_cluster"]
    assert keeper in kept and keeper in trio
    assert metas["orig-05"] == {"dedup_cluster": "orig-05", "dedup_cluster_size": 1}
    # clusters: orig-00 + 2 copies, and orig-01..04 with one copy each
    assert stats["clusters"] == 5 and stats["docs_in_clusters"] == 11
    examples = [json.loads(line) for line in (tmp_path / "out/examples.jsonl").read_text().splitlines()]
    assert examples[0]["size"] == 3 and examples[0]["members"][0]["action"] == "keep"


def test_keep_longest_keeps_the_longer_copy(tmp_path):
    rng = random.Random(1)
    text = paragraph(rng)
    src = write_corpus(tmp_path / "in", [doc("short", text, "t"), doc("long", text + " " * 0 + ". More.", "t"),
                                         doc("other", paragraph(rng), "t")])
    # "More" adds one word: a near duplicate (Jaccard 0.99), longer
    run_dedup(src, tmp_path / "first")
    run_dedup(src, tmp_path / "longest", keep="longest")
    assert {r["id"] for r in iter_docs(tmp_path / "first")} == {"short", "other"}
    assert {r["id"] for r in iter_docs(tmp_path / "longest")} == {"long", "other"}


def test_below_threshold_pairs_are_kept_with_exact_verification(tmp_path):
    rng = random.Random(2)
    base = paragraph(rng, 60)
    words = base.split(" ")
    far = " ".join(w if i % 6 else "changed" for i, w in enumerate(words))  # ~1 in 6 words edited: J << 0.8
    src = write_corpus(tmp_path / "in", [doc("a", base, "t"), doc("b", far, "t")])
    assert run_dedup(src, tmp_path / "exact")["docs_kept"] == 2
    # a threshold under their similarity merges them
    assert run_dedup(src, tmp_path / "low", threshold=0.05)["dropped"] == {"near_duplicate": 1}


def test_bad_input_is_accounted_and_never_crashes(tmp_path):
    rng = random.Random(4)
    huge = " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "omega"]) for _ in range(1_800_000))
    rows = [
        doc("empty", "", "t"), doc("empty-2", "", "t"), doc("spaces", " \n\t ", "t"),
        doc("junk", bytes(range(256)).decode("latin-1") * 40, "t"),
        doc("junk-copy", bytes(range(256)).decode("latin-1") * 40, "t"),
        doc("japanese", "これは日本語の文章です。重複の検出を試します。", "t"),
        doc("greek", "Αυτό είναι ένα ελληνικό κείμενο για τον έλεγχο διπλοτύπων και άλλων πραγμάτων", "t"),
        doc("huge", huge, "t"), doc("normal", paragraph(rng), "t"),
    ]
    assert len(huge) > 10_000_000
    stats = run_dedup(write_corpus(tmp_path / "in", rows, shard_docs=3), tmp_path / "out")
    assert stats["docs_in"] == 9
    assert stats["docs_in"] == stats["docs_kept"] + sum(stats["dropped"].values())
    reasons = {r["id"]: r["reason"] for r in dropped_rows(tmp_path / "out")}
    # the two empty texts and the whitespace-only one are the same (empty) text; the junk copy too
    assert sorted(reasons.values()) == ["exact_duplicate"] * 3
    assert "junk-copy" in reasons and len({"empty", "empty-2", "spaces"} & set(reasons)) == 2
    assert {"huge", "japanese", "greek", "normal", "junk"} <= {r["id"] for r in iter_docs(tmp_path / "out")}


def test_split_parts_give_the_same_result_as_one_process(planted, tmp_path):
    src, _ = planted
    cfg = dedup.Config()
    dirs = {part: step_dir(tmp_path / "results", "dedup", "k" * 12, part) for part in dedup.PARTS}
    shards = sorted(p.name for p in src.glob("shard-*.parquet"))
    for name in shards:  # one call per shard, as Snakemake's per-shard jobs
        dedup.PARTS["signatures"](cfg, {"docs": src}, dirs, [name], None)
    for step in ("buckets", "clusters"):
        dedup.PARTS[step](cfg, {"docs": src}, dirs, [], __import__("logging").getLogger("t"))
    split = execute("dedup", dataclasses.asdict(cfg), {"docs": src, "clusters": dirs["clusters"]},
                    tmp_path / "split")
    whole = run_dedup(src, tmp_path / "whole")
    for k in ("docs_kept", "dropped", "clusters", "docs_in_clusters"):
        assert split[k] == whole[k], k
    assert list(iter_docs(tmp_path / "split")) == list(iter_docs(tmp_path / "whole"))


@pytest.mark.parametrize("verify", ["estimated", "none"])
def test_other_verification_modes_find_the_planted_copies(planted, tmp_path, verify):
    src, _ = planted
    stats = run_dedup(src, tmp_path / verify, verify=verify)
    assert stats["dropped"] == {"exact_duplicate": 3, "near_duplicate": 3}


@pytest.mark.parametrize("overrides,message", [
    ({"bands": 10}, "dedup.bands and dedup.rows go together"),
    ({"bands": 20, "rows": 8}, "at most dedup.num_perm = 128"),
    ({"verify": "maybe"}, "dedup.verify must be one of"),
    ({"keep": "shortest"}, "dedup.keep must be one of"),
    ({"threshold": 1.5}, "dedup.threshold must be in (0, 1]"),
])
def test_config_mistakes_name_the_key(planted, tmp_path, overrides, message):
    src, _ = planted
    with pytest.raises(StageError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        run_dedup(src, tmp_path / "out", **overrides)


def test_a_failing_shard_names_itself(planted, tmp_path):
    src, _ = planted
    bad = sorted(src.glob("shard-*.parquet"))[1]
    bad.write_bytes(b"this is not parquet")
    with pytest.raises(RuntimeError, match=bad.name):
        run_dedup(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # a fresh interpreter composing the config: ~10 s on a busy 2-core runner
def test_cli_on_user_files(tmp_path):
    rng = random.Random(5)
    text = paragraph(rng)
    (tmp_path / "docs.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in [text, text, paragraph(rng)]))
    proc = subprocess.run([sys.executable, "-m", "pipeline", "dedup", f"in={tmp_path / 'docs.jsonl'}",
                           f"out={tmp_path / 'out.jsonl'}", "threshold=0.9"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(out) == 2 and all("dedup_cluster" in r["meta"] for r in out)
    stats = json.loads((tmp_path / "out.jsonl.stats.json").read_text())
    assert stats["dropped"] == {"exact_duplicate": 1}


def test_training_documents_overlapping_an_eval_set_are_removed(tmp_path):
    from pipeline.core.docs import write_table

    leaked = "the committee voted to approve the new budget for the city schools after a long debate on tuesday night"
    task_dir = tmp_path / "task"
    task_dir.mkdir()
    (task_dir / "roll.jsonl").write_text(json.dumps({"text": leaked}) + "\n")
    (task_dir / "roll.yaml").write_text(
        "task: roll\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: roll.jsonl\n"
        'output_type: loglikelihood_rolling\ntest_split: test\ndoc_to_text: ""\ndoc_to_target: "{{text}}"\n')
    src = tmp_path / "src"
    rows = [doc("clean", paragraph(random.Random(1), 80), "web/x"),
            doc("leaky", "Some words first. " + leaked.upper() + " and more after it.", "web/x")]
    write_table(src / "shard-00000.parquet", rows)
    (src / "stats.json").write_text("{}")
    stats = run_dedup(src, tmp_path / "out", remove_eval_overlap=[str(task_dir / "roll.yaml")])
    assert stats["dropped"] == {"eval_overlap": 1} and stats["docs_kept"] == 1
    assert [r["id"] for r in dropped_rows(tmp_path / "out")] == ["leaky"]
    assert run_dedup(src, tmp_path / "out2")["docs_kept"] == 2
