"""benchmarks/generate.py runs end to end (tiny settings; the numbers are the benchmark's business)."""
import pytest

from benchmarks import generate


@pytest.mark.slow  # a 1.7M-parameter model, its HF export and GGUF, a server, torch.compile: ~90 s on 2 cores
def test_the_generation_benchmark_runs_and_prints_its_ratios(capsys):
    generate.main(["--new-tokens", "3", "--rounds", "1", "--clients", "2"])
    out = capsys.readouterr().out
    assert "greedy tokens: ours and ours compiled == HF generate on all prompts at batch 1 and 16" in out
    for line in ("batch  1: ours ", "batch 16: ours ", "batch  1: ours compiled", "batch 16: ours compiled",
                 "server (compiled): 2 concurrent streaming clients", "KV cache:"):
        assert line in out and "ratio" in out
    for loop in ("Llama.generate", "llama_decode loop"):  # the high-level wrapper and the C API loop
        assert f"llama.cpp (GGUF f32) batch 1, {loop}" in out and "greedy tokens equal ours on" in out


@pytest.mark.slow  # builds the benchmark's model and its HF export: ~15 s on 2 cores
def test_the_benchmark_leaves_out_the_rows_named_in_skip(capsys):
    generate.main(["--new-tokens", "2", "--rounds", "1", "--skip", "compiled,llama.cpp,server,kv"])
    out = capsys.readouterr().out
    assert "batch  1: ours" in out and "batch 16: ours" in out
    assert "compiled" not in out and "llama.cpp" not in out and "server" not in out and "KV cache:" not in out


def test_an_unknown_row_to_skip_is_refused(capsys):
    with pytest.raises(SystemExit):
        generate.main(["--skip", "gpu"])
    assert "--skip takes compiled, llama.cpp, server, kv" in capsys.readouterr().err
