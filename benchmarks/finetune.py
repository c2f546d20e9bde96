"""Fine-tuning evidence from a pretrained base, in one run: held-out exact match before and after
each method (SFT, LoRA, prompt tuning, prefix tuning, then DPO and GRPO-style RL from the SFT
model), DPO's held-out preference accuracy over its SFT start, the reward model's held-out
accuracy, RL's reward over training, trainable parameters and optimizer state per method, and
our SFT step time vs TRL's SFTTrainer on the same exported model and batches.

    python benchmarks/finetune.py --base results/pretrain/<key> --tokens results/tokenize/<key>   # the stage's recipes
    python benchmarks/finetune.py --base DIR --tokens DIR --steps 200 --quick    # minutes, no RL/TRL

Every method runs with the finetune stage's own recipe (its steps and peak lr per method, as the
default DAG runs it) unless a flag says otherwise.

``--base`` is a pretrain stage directory (the default run's cpu_2m model: ``snakemake -c 2
--until pretrain``); ``--tokens`` its tokenize directory, whose documents give passage_qa its
passages. The base has never seen a chat template, so its exact match is ~0: every point of
it is what fine-tuning taught. Every run here uses one torch thread (train.threads=1): on a
shared 2-core machine a second OpenMP thread waiting for a busy core made steps >10x slower.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.stage import execute  # noqa: E402

BATCH = 16


def finetune(name, model_dir, out, steps, tokens=None, **cfg):
    """One finetune stage run; steps 0 = the stage's own recipe for the method (what `make run` does)."""
    train = {"steps": steps, "batch_size": BATCH, "log_every": 10, "progress": False, "compile": False, "threads": 1}
    if steps:  # a shorter or longer run than the stage's: validation four times, warmup a tenth at most
        train.update(eval_every=max(steps // 4, 1), checkpoint_every=steps, warmup_steps=min(30, steps // 10))
    train.update(cfg.pop("train", {}))
    inputs = {"model": model_dir, **({"tokens": tokens} if tokens else {}), **cfg.pop("inputs", {})}
    t = time.perf_counter()
    stats = execute("finetune", {"train": train, **cfg}, inputs, out / name)
    stats["bench_wall_s"] = time.perf_counter() - t
    return stats


def _lr(value) -> dict:
    return {"lr": value} if value else {}  # 0: the stage's peak lr for the method


def methods(base: Path, tokens: Path | None, out: Path, args) -> dict:
    n, sft_cfg = args.steps, {"train_examples": args.examples, "heldout_examples": args.heldout}
    runs = {"sft": finetune("sft", base, out, n, tokens, **sft_cfg)}
    lora = {"rank": args.lora_rank, "alpha": 2.0 * args.lora_rank} if args.lora_rank else {}
    runs["lora"] = finetune("lora", base, out, n, tokens, method="lora", **sft_cfg, lora=lora,
                            train=_lr(args.lora_lr))
    runs["prompt"] = finetune("prompt", base, out, n, tokens, method="prompt", virtual_tokens=16, **sft_cfg)
    runs["prefix"] = finetune("prefix", base, out, n, tokens, method="prefix", virtual_tokens=16, **sft_cfg)
    sft = out / "sft"
    pref = {"train_examples": args.examples // 2, "heldout_examples": args.heldout}
    runs["dpo"] = finetune("dpo", sft, out, args.dpo_steps, tokens, method="dpo",
                           dpo={"beta": args.beta, "rpo_alpha": args.rpo_alpha, "rejected": args.dpo_rejected},
                           train=_lr(args.dpo_lr), **pref)
    runs["reward"] = finetune("reward", sft, out, args.dpo_steps, tokens, method="reward", **pref)
    if not args.quick:
        # A fixed pool of prompts, seen again every few steps: the reward curve then compares the
        # same prompts early and late (over a fresh draw each step, which prompts came up moved the
        # per-step reward more than training did); held-out exact match says what carried over.
        runs["rl"] = finetune("rl", sft, out, args.rl_steps, tokens, method="rl", heldout_examples=args.heldout,
                              train_examples=args.rl_pool, rl={"max_new_tokens": 12},
                              train={"batch_size": args.rl_prompts, "log_every": 1, **_lr(args.rl_lr)})
    return runs


def trl_step_times(model_dir: Path, rows: list[dict], steps: int) -> list[float]:
    """Seconds per optimizer step of TRL's SFTTrainer on the exported model: assistant-only
    loss, fp32, padding to the batch's longest row, the same AdamW, lr and clipping as ours."""
    import datasets
    import trl
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    tok = AutoTokenizer.from_pretrained(model_dir / "hf")
    model = AutoModelForCausalLM.from_pretrained(model_dir / "hf", dtype=torch.float32)
    args = trl.SFTConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=BATCH, max_steps=steps,
                         learning_rate=1e-3, report_to=[], use_cpu=True, bf16=False, assistant_only_loss=True,
                         logging_steps=1000, save_strategy="no", max_length=256, gradient_checkpointing=False,
                         lr_scheduler_type="constant", dataloader_num_workers=0, optim="adamw_torch_fused",
                         adam_beta2=0.95, weight_decay=0.0, max_grad_norm=1.0)
    trainer = trl.SFTTrainer(model=model, processing_class=tok, args=args,
                             train_dataset=datasets.Dataset.from_list([{"messages": r["messages"]} for r in rows]))
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t)

    trainer.add_callback(Clock())
    trainer.train()
    return times[2:]  # the first steps warm up


def ours_step_times(out: Path) -> list[float]:
    """Seconds per optimizer step between the logged steps of a run (validation and checkpoints
    fall outside these intervals); the first interval, which warms up, left out."""
    records = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    return [(b["elapsed_s"] - a["elapsed_s"]) / (b["step"] - a["step"]) for a, b in zip(records[1:], records[2:])]


def step_time_rows(base: Path, steps: int) -> tuple[float, float]:
    """Our SFT and TRL's on the same conversations, batch, threads, back to back: medians in seconds."""
    from pipeline.core.tasks import generated
    from pipeline.finetune.data import from_generated

    rows = [from_generated(r, "conversation") for t in generated.TASKS if t != "passage_qa"
            for r in generated.examples(t, "train", 200)]
    root = Path(tempfile.mkdtemp(prefix="lmdag-bench-ft-time-"))
    torch.set_num_threads(1)
    finetune("time", base, root, steps, heldout_examples=0, tasks=[t for t in generated.TASKS if t != "passage_qa"],
             train_examples=len(rows), train={"lr": 1e-3, "schedule": "constant", "eval_every": steps, "log_every": 1})
    ours = statistics.median(ours_step_times(root / "time"))
    theirs = statistics.median(trl_step_times(base, rows, steps))
    return ours, theirs


def table(runs: dict, tasks: list[str]) -> list[str]:
    lines = [f"{'method':<8} {'model':<7} " + " ".join(f"{t:>10}" for t in tasks) + f" {'mean':>6} {'trainable':>10}"
             f" {'AdamW MB':>8} {'wall s':>7}"]
    start = {"sft": "base", "lora": "base", "prompt": "base", "prefix": "base", "dpo": "sft", "rl": "sft"}
    shown_base = False
    for name, s in runs.items():
        em = s.get("heldout_exact_match")
        if not em:
            continue
        if start[name] == "base" and not shown_base or name == "dpo":
            b = em["before"]
            lines.append(f"{'-':<8} {start[name]:<7} " + " ".join(f"{b[t]:>10.2f}" for t in tasks)
                         + f" {sum(b.values()) / len(b):>6.2f}")
            shown_base = True
        a = em["after"]
        lines.append(f"{name:<8} {name:<7} " + " ".join(f"{a[t]:>10.2f}" for t in tasks)
                     + f" {sum(a.values()) / len(a):>6.2f} {s['trainable_params']:>10,} "
                     f"{s['optimizer_state_bytes'] / 1e6:>8.2f} {s['bench_wall_s']:>7.0f}")
    return lines


def report(runs: dict, args) -> None:
    tasks = list(runs["sft"]["heldout_exact_match"]["before"])
    rl = runs.get("rl", {})
    print(f"\nheld-out exact match ({args.heldout} problems per task, greedy, zero-shot with the chat template); "
          f"{runs['sft']['steps']} steps x {BATCH} for sft/lora/prompt/prefix, {runs['dpo']['steps']} for dpo/reward"
          + (f", {rl['steps']} x {args.rl_prompts} prompts x {rl['group_size']} samples for rl" if rl else ""))
    print("\n".join(table(runs, tasks)))
    d = runs["dpo"]
    print(f"\nDPO (beta {args.beta}, rpo_alpha {args.rpo_alpha}, rejected: {args.dpo_rejected}): held-out preference accuracy (log p(chosen) > log p(rejected)) "
          f"SFT start {d['heldout_preference_accuracy']['before']:.3f} -> DPO {d['heldout_preference_accuracy']['after']:.3f} "
          f"on {d['heldout_pairs']} pairs; implicit reward accuracy {d['heldout_reward_accuracy']:.3f}, "
          f"margin {d['heldout_reward_margin']:.3f}")
    print("  per task (before -> after): " + ", ".join(
        f"{t} {v['before']:.2f} -> {v['after']:.2f}" for t, v in d["heldout_preference_accuracy_by_task"].items()
        if v["pairs"]))
    own = d["heldout_own_mistakes"]
    if own["pairs"]:
        print(f"  against the SFT model's own wrong greedy replies ({own['pairs']} held-out pairs): "
              f"{own['before']:.3f} -> {own['after']:.3f}")
    r = runs["reward"]
    print(f"reward model (from sft): held-out accuracy {r['heldout_accuracy']:.3f} on {r['heldout_pairs']} pairs "
          f"(chance 0.5), mean margin {r['heldout_margin']:.3f}")
    if "rl" in runs:
        curve = [v for _, v in runs["rl"]["reward_curve"]]
        k = max(len(curve) // 5, 1)
        print(f"RL (GRPO on the tasks' answers, {args.rl_pool} training prompts): mean sampled reward over the first "
              f"{k} steps {statistics.mean(curve[:k]):.3f} -> last {k} steps {statistics.mean(curve[-k:]):.3f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--base", type=Path, required=True, help="a pretrained model directory")
    p.add_argument("--tokens", type=Path, help="its tokenize directory (passages for passage_qa)")
    p.add_argument("--steps", type=int, default=0, help="sft/lora/prompt/prefix steps (0: the stage's, as make run)")
    p.add_argument("--examples", type=int, default=20000)
    p.add_argument("--heldout", type=int, default=50)
    p.add_argument("--lora-rank", type=int, default=0, help="LoRA rank, alpha = 2 x rank (0: the stage's)")
    p.add_argument("--lora-lr", type=float, default=0.0, help="0: the stage's")
    p.add_argument("--dpo-steps", type=int, default=0, help="dpo and reward-model steps (0: the stage's)")
    p.add_argument("--dpo-lr", type=float, default=5e-4, help="as the default DAG (0: the stage's)")
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--dpo-rejected", choices=("given", "policy"), default="given",
                   help="policy: the SFT model's own wrong replies as the rejected ones (finetune dpo.rejected)")
    p.add_argument("--rpo-alpha", type=float, default=1.0, help="DPO's NLL weight on the chosen replies (as the default DAG)")
    p.add_argument("--rl-steps", type=int, default=0, help="0: the stage's")
    p.add_argument("--rl-prompts", type=int, default=8, help="prompts per RL step (each sampled rl.group_size times)")
    p.add_argument("--rl-pool", type=int, default=64, help="the RL prompts (over all tasks), each seen every pool/prompts steps")
    p.add_argument("--rl-lr", type=float, default=0.0, help="0: the stage's")
    p.add_argument("--time-steps", type=int, default=40, help="steps of each trainer timed for the step time")
    p.add_argument("--work", type=Path, help="where the runs go (default: a new temporary directory)")
    p.add_argument("--quick", action="store_true", help="skip RL and the TRL timing")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out = args.work or Path(tempfile.mkdtemp(prefix="lmdag-bench-ft-"))
    runs = methods(args.base, args.tokens, out, args)
    report(runs, args)
    if not args.quick:
        ours, theirs = step_time_rows(args.base, args.time_steps)
        print(f"SFT step time, batch {BATCH}, CPU fp32, 1 thread, median of {args.time_steps} steps: ours "
              f"{ours * 1000:.1f} ms, TRL SFTTrainer {theirs * 1000:.1f} ms -> TRL / ours = {theirs / ours:.2f}x")
    (out / "summary.json").write_text(json.dumps(runs, indent=1, default=str))
    print(f"\nfull stats: {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
