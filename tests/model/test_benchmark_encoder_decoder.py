"""benchmarks/encoder_decoder.py runs end to end (tiny settings; the numbers are the benchmark's business)."""
from benchmarks import encoder_decoder


def test_the_encoder_decoder_benchmark_runs_and_prints_its_ratio(capsys):
    encoder_decoder.main(["--preset", "ci_tiny", "--batch", "2", "--steps", "1", "--rounds", "1", "--threads", "1"])
    out = capsys.readouterr().out
    assert "logits: max |ours - T5ForConditionalGeneration| =" in out
    diff = float(out.split("T5ForConditionalGeneration| = ")[1].split()[0])
    assert diff < 1e-4
    assert "train step             ours:" in out and "ratio ours / transformers T5:" in out
