import json

from pipeline.report.blocks import Context, Figure, Table
from pipeline.report.sections import compress as section


def write(d, methods, size, bpb, base):
    d.mkdir(parents=True)
    (d / "stats.json").write_text(json.dumps({
        "methods": methods, "size_bytes": size, "size_ratio": size / base["size_bytes"], "bits_per_weight": 8.1,
        "linear_bits_per_weight": 8.2, "params": 100, "nonzeros": 90, "val_perplexity": 3.0, "val_bits_per_byte": bpb,
        "bits_per_byte_increase": bpb - base["val_bits_per_byte"], "latency_ms_per_token": 1.5, "compression_s": 0.3,
        "base": base}))


def test_table_has_the_base_once_and_every_variant_and_a_frontier_plot(tmp_path):
    base = {"size_bytes": 1000, "bits_per_weight": 32.0, "linear_bits_per_weight": 32.0, "params": 100,
            "nonzeros": 100, "val_perplexity": 2.9, "val_bits_per_byte": 1.5, "latency_ms_per_token": 1.0}
    write(tmp_path / "compress_int8" / "aaaaaaaaaaaa", ["int8"], 300, 1.51, base)
    write(tmp_path / "compress_sparse" / "bbbbbbbbbbbb", ["wanda", "gptq"], 200, 1.6, base)
    steps = {"compress_int8": {"stage": "compress", "key": "aaaaaaaaaaaa", "inputs": {}},
             "compress_sparse": {"stage": "compress", "key": "bbbbbbbbbbbb", "inputs": {}},
             "evaluate": {"stage": "evaluate", "key": "cccccccccccc", "inputs": {}}}
    ctx = Context(points=[{"name": "p", "overrides": [], "steps": steps}], results=tmp_path,
                  out=tmp_path / "report", cfg=None)
    blocks = section.render(ctx)
    table = next(b for b in blocks if isinstance(b, Table))
    assert [r[0] for r in table.rows] == ["base", "int8", "wanda + gptq"]
    assert table.rows[1][1] == "compress_int8 (aaaaaaaaaaaa)"
    assert table.rows[2][table.headers.index("bits/byte")] == 1.6
    assert any(isinstance(b, Figure) and b.png.startswith(b"\x89PNG") for b in blocks)


def test_no_section_without_compress_steps(tmp_path):
    ctx = Context(points=[{"name": "p", "overrides": [], "steps": {}}], results=tmp_path, out=tmp_path, cfg=None)
    assert section.render(ctx) == []
