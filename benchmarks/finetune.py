"""Fine-tuning evidence in one run: held-out exact match before/after each method, DPO's
preference accuracy over its SFT start, LoRA's trainable parameters and optimizer memory vs
full fine-tuning, and our SFT step time vs TRL's SFTTrainer on the same exported model.

    python benchmarks/finetune.py                       # ~10 min on 2 CPU cores
    python benchmarks/finetune.py --sft-steps 40 --quick

The base model is the random-initialised tiny model the tests use, on a tokenizer that has
seen the tasks' words (no pretraining: base exact match is ~0 by construction, so every point
of exact match is what fine-tuning taught). TRL runs fp32 (bf16=False) like ours on CPU.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.stage import execute  # noqa: E402


def build_base(root: Path, d_model: int, n_layer: int) -> tuple[Path, Path]:
    from pipeline.core.docs import doc, write_table
    from tests.finetune.conftest import _corpus, tiny_model_dir

    rows = [doc(f"doc{i}", t, "tasks") for i, t in enumerate(_corpus(random.Random(0)))]
    write_table(root / "docs" / "shard-00000.parquet", rows)
    execute("tokenize", {"vocab_size": 400, "n_sentinels": 2, "workers": 1, "val_fraction": 0.1},
            {"docs": root / "docs"}, root / "tokenize")
    base = tiny_model_dir(root / "tokenize", root / "base", d_model=d_model, n_layer=n_layer,
                          d_mlp=3 * d_model, max_seq_len=96)
    return root / "tokenize", base


def finetune(name, model_dir, out, steps, **cfg):
    train = {"steps": steps, "batch_size": 16, "warmup_steps": 5, "eval_every": steps, "checkpoint_every": steps,
             "log_every": 10, "progress": False, "compile": False, **cfg.pop("train", {})}
    inputs = {"model": model_dir, **cfg.pop("inputs", {})}
    t = time.perf_counter()
    stats = execute("finetune", {"train": train, "heldout_examples": 50, **cfg}, inputs, out / name)
    stats["bench_wall_s"] = time.perf_counter() - t
    return stats


def trl_step_time(model_dir: Path, steps: int, batch: int) -> float:
    """Seconds per optimizer step of TRL's SFTTrainer on the exported model, assistant-only loss."""
    import datasets
    import trl
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.core.tasks import generated
    from pipeline.finetune.data import from_generated

    rows = [from_generated(r, "conversation") for t in generated.TASKS for r in generated.examples(t, "train", 200)]
    tok = AutoTokenizer.from_pretrained(model_dir / "hf")
    model = AutoModelForCausalLM.from_pretrained(model_dir / "hf", dtype=torch.float32)
    args = trl.SFTConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=batch, max_steps=steps + 2,
                         learning_rate=1e-3, report_to=[], use_cpu=True, bf16=False, assistant_only_loss=True,
                         logging_steps=1000, save_strategy="no", max_length=96, gradient_checkpointing=False,
                         lr_scheduler_type="constant", dataloader_num_workers=0)
    trainer = trl.SFTTrainer(model=model, processing_class=tok, args=args,
                             train_dataset=datasets.Dataset.from_list([{"messages": r["messages"]} for r in rows]))
    times = []

    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t)

    trainer.add_callback(Clock())
    trainer.train()
    return sum(times[2:]) / max(len(times[2:]), 1)  # the first steps warm up


def ours_step_time(stats: dict) -> float:
    return stats["train_wall_s"] / stats["steps"]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--sft-steps", type=int, default=300)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="skip RL and the TRL timing")
    args = p.parse_args()
    torch.set_num_threads(2)
    root = Path(tempfile.mkdtemp(prefix="lmdag-bench-ft-"))
    tok_dir, base = build_base(root, args.d_model, args.layers)
    out = root / "runs"
    runs = {"sft": finetune("sft", base, out, args.sft_steps),
            "lora": finetune("lora", base, out, args.sft_steps, method="lora", lora={"rank": 16, "alpha": 32.0})}
    runs["dpo"] = finetune("dpo", out / "sft", out, max(args.sft_steps // 4, 10), method="dpo", dpo={"beta": 0.1})
    runs["reward"] = finetune("reward", out / "sft", out, max(args.sft_steps // 4, 10), method="reward")
    if not args.quick:
        runs["rl"] = finetune("rl", out / "sft", out, max(args.sft_steps // 10, 5), method="rl",
                              rl={"group_size": 8, "max_new_tokens": 12}, train={"batch_size": 4})

    print(f"\nheld-out exact match (50 problems per task; base = random init, {args.d_model}x{args.layers})")
    tasks = list(runs["sft"]["heldout_exact_match"]["before"])
    print(f"{'method':<8} {'start':<6} " + " ".join(f"{t:>11}" for t in tasks) + f" {'mean':>7} {'wall s':>7}")
    for name, s in runs.items():
        if "heldout_exact_match" not in s:
            continue
        for when in ("before", "after"):
            em = s["heldout_exact_match"][when]
            label = name if when == "after" else f"({'base' if name in ('sft', 'lora') else 'sft'})"
            print(f"{label:<8} {when:<6} " + " ".join(f"{em[t]:>11.2f}" for t in tasks)
                  + f" {sum(em.values()) / len(em):>7.2f} {s['bench_wall_s'] if when == 'after' else 0:>7.1f}")
    d = runs["dpo"]
    print(f"\nDPO held-out preference accuracy (log p(chosen) > log p(rejected)): SFT start "
          f"{d['heldout_preference_accuracy']['before']:.3f} -> DPO {d['heldout_preference_accuracy']['after']:.3f}; "
          f"implicit reward accuracy {d['heldout_reward_accuracy']:.3f}, margin {d['heldout_reward_margin']:.3f}")
    print(f"reward model held-out accuracy {runs['reward']['heldout_accuracy']:.3f} on {runs['reward']['heldout_pairs']} pairs")
    if "rl" in runs:
        curve = runs["rl"]["reward_curve"]
        print(f"RL reward (mean over sampled replies): first logged {curve[0][1]:.3f} -> last {curve[-1][1]:.3f}")
    f, lo = runs["sft"], runs["lora"]
    print(f"\nLoRA r=16: {lo['trainable_params']:,} trainable of {lo['params']:,} "
          f"({lo['trainable_params'] / lo['params']:.1%}); AdamW state {lo['optimizer_state_bytes'] / 1e6:.2f} MB vs "
          f"full fine-tuning {f['optimizer_state_bytes'] / 1e6:.2f} MB (ratio {f['optimizer_state_bytes'] / lo['optimizer_state_bytes']:.1f}x)")
    if not args.quick:
        theirs = trl_step_time(base, 20, 16)
        ours = ours_step_time(f)
        print(f"SFT step time, batch 16, CPU fp32: ours {ours * 1000:.1f} ms, TRL SFTTrainer {theirs * 1000:.1f} ms "
              f"-> TRL / ours = {theirs / ours:.2f}x")
    (root / "summary.json").write_text(json.dumps(runs, indent=1, default=str))
    print(f"\nfull stats: {root / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
