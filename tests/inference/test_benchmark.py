"""benchmarks/generate.py runs end to end (tiny settings; the numbers are the benchmark's business)."""
import pytest

from benchmarks import generate


@pytest.mark.slow  # builds a 1.7M-parameter model, its HF export and GGUF, and a server: ~30 s on 2 cores
def test_the_generation_benchmark_runs_and_prints_its_ratios(capsys):
    generate.main(["--new-tokens", "3", "--rounds", "1", "--clients", "2"])
    out = capsys.readouterr().out
    assert "greedy tokens: ours == HF generate on all prompts at batch 1 and 16" in out
    for line in ("batch  1: ours", "batch 16: ours", "server: 2 concurrent streaming clients", "KV cache:"):
        assert line in out and "ratio" in out
    assert "llama.cpp (GGUF f32) batch 1:" in out
