"""The architectures section: one row per pretrain run of a sweep, its objective's bits/byte
beside its evaluation, and nothing when the runs do not differ in family or objective."""
import json

from pipeline.report.blocks import Context, Table
from pipeline.report.sections import architectures


def _point(tmp_path, name, key, arch, attention, objective, bpb, acc):
    pre = tmp_path / "pretrain" / key
    ev = tmp_path / "evaluate_pretrain" / f"e{key[1:]}"
    for d in (pre, ev):
        d.mkdir(parents=True)
    (pre / "stats.json").write_text(json.dumps({
        "arch": arch, "attention": attention, "objective": objective, "params": 1000, "flops_per_token": 2.5e6,
        "train_wall_s": 3.0, "val_loss": 2.0, "val_bits_per_byte": bpb, "unigram_bits_per_byte": 4.0,
        "val_scored": f"what {objective} predicts"}))
    (ev / "stats.json").write_text(json.dumps({
        "results": {"heldout": {"metrics": {"bits_per_byte": bpb + 1}}, "piqa": {"metrics": {"acc": acc, "acc_norm": acc + 0.1}}},
        "core": {"core": acc - 0.5}}))
    return {"name": name, "overrides": [], "steps": {
        "pretrain": {"stage": "pretrain", "key": key, "inputs": {}},
        "evaluate_pretrain": {"stage": "evaluate", "key": ev.name, "inputs": {"model": "pretrain"}}}}


def test_one_row_per_family_with_its_objective_and_evaluation(tmp_path):
    points = [_point(tmp_path, "+family=causal_lm", "a00000000001", "decoder", "causal", "lm", 2.5, 0.6),
              _point(tmp_path, "+family=encoder_decoder", "b00000000002", "encoder_decoder", "causal",
                     "span_corruption", 3.5, 0.55)]
    blocks = architectures.render(Context(points=points, results=tmp_path, out=tmp_path, cfg=None))
    table = next(b for b in blocks if isinstance(b, Table))
    rows = [dict(zip(table.headers, r)) for r in table.rows]
    assert [r["arch"] for r in rows] == ["decoder", "encoder_decoder"]
    assert rows[1]["objective"] == "span_corruption" and rows[1]["objective bits/byte"] == 3.5
    assert rows[1]["held-out bits/byte (evaluate)"] == 4.5 and rows[0]["piqa acc_norm"] == 0.7
    assert rows[0]["CORE"] == 0.1
    scored = [b for b in blocks if isinstance(b, Table)][1]
    assert ["span_corruption", "what span_corruption predicts"] in scored.rows


def test_nothing_when_every_run_is_the_same_family(tmp_path):
    points = [_point(tmp_path, "lr=1", "a00000000001", "decoder", "causal", "lm", 2.5, 0.6),
              _point(tmp_path, "lr=2", "b00000000002", "decoder", "causal", "lm", 2.4, 0.6)]
    assert architectures.render(Context(points=points, results=tmp_path, out=tmp_path, cfg=None)) == []
