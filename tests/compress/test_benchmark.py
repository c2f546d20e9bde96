"""benchmarks/compress.py runs end to end (tiny settings; the numbers are the benchmark's business)."""
import pytest

from benchmarks import compress as bench
from benchmarks.compress import LLMC_VENV


def run(token_dir, tmp_path, capsys, *extra):
    bench.main(["--tokens", str(token_dir), "--work", str(tmp_path), "--steps", "2", "--batch", "2", "--samples", "4",
                "--eval-windows", "2", "--seq-len", "64", "--threads", "1", *extra])
    return capsys.readouterr().out


@pytest.mark.slow
def test_the_compression_benchmark_runs_against_torchao(token_dir, tmp_path, capsys):
    pytest.importorskip("torchao", reason="torchao is a bench dependency")
    out = run(token_dir, tmp_path, capsys, "--no-llmcompressor")
    for line in ("GPTQ int4 g128 (W4A16)", "int8 weight-only per channel", "W8A8 (ours: SmoothQuant a=0.5)",
                 "W8A8 (ours: SmoothQuant a searched)", "int8 codes, ours vs torchao", "GPTQ vs round-to-nearest at 4 bits",
                 "GPTQ vs round-to-nearest at 3 bits", "latency ms/token"):
        assert line in out
    assert "| torchao          ppl" in out and "increase ours/peer" in out and "llm-compressor skipped" in out


@pytest.mark.slow
def test_the_compression_benchmark_runs_against_llm_compressor(token_dir, tmp_path, capsys):
    if not (LLMC_VENV / "bin" / "python").is_file():
        pytest.skip(f"{LLMC_VENV} does not exist (the benchmark creates it on its first full run)")
    out = run(token_dir, tmp_path, capsys)
    assert out.count("| llm-compressor   ppl") == 4 and "llm-compressor skipped" not in out
