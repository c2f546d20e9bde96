"""benchmarks/finetune.py runs end to end on the tiny test model (the numbers are the benchmark's business)."""
import pytest

from benchmarks import finetune as bench


@pytest.mark.slow
def test_the_finetune_benchmark_prints_every_method_and_the_step_time_ratio(base_dir, token_dir, tmp_path, capsys):
    pytest.importorskip("trl", reason="trl is a bench dependency")
    bench.main(["--base", str(base_dir), "--tokens", str(token_dir), "--work", str(tmp_path), "--steps", "3",
                "--examples", "60", "--heldout", "2", "--dpo-steps", "2", "--rl-steps", "2", "--time-steps", "4",
                "--dpo-rejected", "policy"])
    out = capsys.readouterr().out
    for method in ("sft", "lora", "prompt", "prefix", "dpo", "rl"):
        assert f"\n{method:<8} {method:<7} " in out
    for line in ("held-out preference accuracy", "reward model (from sft): held-out accuracy",
                 "RL (GRPO on the tasks' answers", "TRL / ours = ", "rejected: policy",
                 "against the SFT model's own wrong greedy replies"):
        assert line in out
