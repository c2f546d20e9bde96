import json

from pipeline.report.blocks import Context, Figure, Pre, Table
from pipeline.report.sections import training


def test_training_section_shows_bpb_beside_unigram_curves_and_samples(tmp_path):
    d = tmp_path / "pretrain" / "abc123abc123"
    d.mkdir(parents=True)
    stats = {"params": 1000, "steps": 20, "tokens": 5120, "train_wall_s": 3.2, "tokens_per_s": 1600.0, "mfu": 0.05,
             "final_train_loss": 2.5, "val_loss": 2.6, "val_bits_per_byte": 1.7, "unigram_bits_per_byte": 3.4,
             "samples": ["The cat sat."]}
    (d / "stats.json").write_text(json.dumps(stats))
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"step": 10, "loss": 3.0}, {"step": 10, "val_loss": 3.1}, {"step": 20, "loss": 2.5}]))
    ctx = Context(points=[{"name": "default", "overrides": [], "steps": {"pretrain": {"stage": "pretrain", "key": d.name, "inputs": {}}}}],
                  results=tmp_path, out=tmp_path / "report", cfg=None)
    blocks = training.render(ctx)
    table = next(b for b in blocks if isinstance(b, Table))
    row = dict(zip(table.headers, table.rows[0]))
    assert row["val bits/byte"] == 1.7 and row["unigram bits/byte"] == 3.4 and row["MFU"] == "5.0%"
    assert any(isinstance(b, Figure) and b.png.startswith(b"\x89PNG") for b in blocks)
    assert any(isinstance(b, Pre) and "The cat sat." in b.text for b in blocks)


def test_mfu_is_shown_only_against_a_stated_peak():
    assert training._mfu({"mfu": None, "peak_flops_source": "CPU: no stated peak (set train.peak_tflops for MFU)"}) \
        == "n/a (CPU: no stated peak (set train.peak_tflops for MFU))"
    assert training._mfu({"mfu": 0.25, "peak_flops_source": "train.peak_tflops (CPU, stated)"}) == "25.0% (CPU, stated peak)"
    assert training._mfu({"mfu": 0.4, "peak_flops_source": "spec sheet (NVIDIA H100, dense bf16)"}) == "40.0%"


def test_no_section_before_pretraining_ran(tmp_path):
    ctx = Context(points=[{"name": "p", "overrides": [], "steps": {"pretrain": {"stage": "pretrain", "key": "000000000000", "inputs": {}}}}],
                  results=tmp_path, out=tmp_path, cfg=None)
    assert training.render(ctx) == []
