"""The end of a fine-tuning run (rank 0): the model directory, and held-out scores of the
input model (before) and the tuned one (after) — exact match on the generated tasks,
preference accuracy and DPO's implicit-reward accuracy, reward-model accuracy, refusal rates.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import torch

from pipeline.core import chat
from pipeline.core.tasks import safety
from pipeline.core.train import metrics
from pipeline.core.train.loop import Trained, publish_run_files, throughput
from pipeline.finetune import batches as B
from pipeline.finetune import losses, replies
from pipeline.finetune.models import (ADAPTER_DIR, RewardModel, lora_wrap, merge_token_rows,
                                     save_reward, save_token_rows, save_virtual_adapter, train_token_rows,
                                     virtual_config)


def heldout_replies(ctx, model, heldout: dict[str, list[dict]]) -> dict[str, list[str]]:
    """``model``'s greedy replies to each task's held-out questions."""
    return {task: replies.greedy(model, ctx.tok, [r["prompt"] if "prompt" in r else r["messages"][:-1] for r in rows],
                                 ctx.cfg.eval_max_new_tokens, ctx.stops, ctx.device) for task, rows in heldout.items()}


def exact_match(heldout: dict[str, list[dict]], got: dict[str, list[str]]) -> dict[str, float]:
    """Each task's replies (heldout_replies) scored by exact match."""
    scores = {}
    for task, rows in heldout.items():
        golds = [r["answer"] if "answer" in r else r.get("chosen") or r["messages"][-1]["content"] for r in rows]
        scores[task] = sum(g.strip() == a.strip() for g, a in zip(got[task], golds)) / max(len(rows), 1)
    return scores


@torch.no_grad()
def pair_logps(ctx, model, rows) -> tuple[torch.Tensor, torch.Tensor]:
    chosen, rejected = [], []
    model.eval()
    for chunk in B.batched(rows, ctx.tc.batch_size):
        x, y = B.collate_pairs(chunk, ctx.pad_id)
        lp = losses.sequence_logps(model, x.to(ctx.device), y.to(ctx.device)).cpu()
        chosen.append(lp[:len(chunk)])
        rejected.append(lp[len(chunk):])
    return torch.cat(chosen), torch.cat(rejected)


def heldout_pair_groups(ctx) -> dict[str, list]:
    """Encoded held-out pairs per task; the validation pairs, as one group, when none is held out;
    with the safety mix, the held-out safety pairs too (harmful requests, look-alikes)."""
    groups = {task: [dict(p) for p in rows] for task, rows in ctx.examples.heldout.items() if rows}
    groups = groups or {"validation": ctx.examples.validation}
    if ctx.cfg.safety.mix:
        for p in safety.preference_pairs("test"):
            groups.setdefault(f"safety_{p['kind']}", []).append(p)
    return {task: B.encode_all(ctx.tok, rows, "pair", ctx.seq_len, Counter()) for task, rows in groups.items()}


def heldout_pairs(ctx) -> list:
    return [row for rows in heldout_pair_groups(ctx).values() for row in rows]


def preference_scores(ctx, before, after, start_replies: dict[str, list[str]]) -> dict:
    """How often each model gives the chosen reply the higher log-probability (over all pairs
    and per task: which tasks' mistakes DPO fixes), and DPO's implicit reward (beta * log-ratio
    to the start) accuracy and margin, on held-out pairs."""
    groups = heldout_pair_groups(ctx)
    rows = [row for g in groups.values() for row in g]
    b_c, b_r = pair_logps(ctx, before, rows)
    a_c, a_r = pair_logps(ctx, after, rows)
    _, r_c, r_r = losses.dpo_terms(a_c, a_r, b_c, b_r, ctx.cfg.dpo.beta)
    by_task, at = {}, 0
    for task, g in groups.items():
        part = slice(at, at + len(g))
        at += len(g)
        by_task[task] = {"pairs": len(g), "before": float((b_c[part] > b_r[part]).float().mean()) if g else None,
                         "after": float((a_c[part] > a_r[part]).float().mean()) if g else None}
    return {"heldout_pairs": len(rows),
            "heldout_preference_accuracy": {"before": float((b_c > b_r).float().mean()),
                                            "after": float((a_c > a_r).float().mean())},
            "heldout_preference_accuracy_by_task": by_task,
            "heldout_reward_accuracy": float((r_c > r_r).float().mean()),
            "heldout_reward_margin": float((r_c - r_r).mean()),
            "heldout_own_mistakes": own_mistake_scores(ctx, before, after, start_replies)}


def own_mistake_scores(ctx, before, after, start_replies: dict[str, list[str]]) -> dict:
    """Held-out pairs whose rejected reply is the start model's own wrong greedy answer
    (``start_replies``, heldout_replies of ``before``): how often each model gives the right
    answer the higher log-probability than the mistake the start model actually makes (before:
    low by construction; DPO on its mistakes, dpo.rejected=policy, aims here)."""
    tasks = [t for t in ctx.examples.heldout if t in start_replies]
    pairs, wrong = replies.own_mistakes([p for t in tasks for p in ctx.examples.heldout[t]],
                                        [g for t in tasks for g in start_replies[t]])
    rows = B.encode_all(ctx.tok, [p for p, w in zip(pairs, wrong) if w], "pair", ctx.seq_len, Counter())
    if not rows:
        return {"pairs": 0}
    b_c, b_r = pair_logps(ctx, before, rows)
    a_c, a_r = pair_logps(ctx, after, rows)
    return {"pairs": len(rows), "before": float((b_c > b_r).float().mean()), "after": float((a_c > a_r).float().mean())}


@torch.no_grad()
def reward_accuracy(ctx, rm: RewardModel) -> dict:
    rows = heldout_pairs(ctx)
    rm.eval()
    margins = []
    for chunk in B.batched(rows, ctx.tc.batch_size):
        x, y = B.collate_pairs(chunk, ctx.pad_id)
        r = rm(x.to(ctx.device), losses.last_positions(y.to(ctx.device))).cpu()
        margins.append(r[:len(chunk)] - r[len(chunk):])
    m = torch.cat(margins)
    return {"heldout_pairs": len(rows), "heldout_accuracy": float((m > 0).float().mean()),
            "heldout_margin": float(m.mean())}


def refusal_rates(ctx, model) -> dict[str, float]:
    """Refusals among held-out harmful requests (want 1) and harmless look-alikes (want 0)."""
    out = {}
    for kind, asks in (("harmful", safety.harmful_requests("test")),
                       ("harmless", [q for q, _ in safety.harmless_requests("test")])):
        got = replies.greedy(model, ctx.tok, [[{"role": "user", "content": q}] for q in asks],
                             ctx.cfg.eval_max_new_tokens, ctx.stops, ctx.device)
        out[kind] = sum(safety.is_refusal(g) for g in got) / max(len(asks), 1)
    return out


def _meta(ctx) -> dict:
    path = ctx.model_dir / "tokenizer_meta.json"
    meta = json.loads(path.read_text()) if path.is_file() else {}
    meta["chat_template"] = ctx.tok.chat_template
    return meta


def write_model(ctx, run: Trained, out: Path):
    """The tuned model's directory; returns the model to score (on the device)."""
    import copy

    from pipeline.model.io import save_model_dir

    method, tokenizer, meta = ctx.cfg.method, ctx.model_dir / "tokenizer.json", _meta(ctx)
    token_rows = ctx.token_rows
    if method == "reward":
        backbone = copy.deepcopy(ctx.base).cpu()
        save_reward(out, run.weights, backbone, tokenizer, meta, ctx.log)
        tuned = RewardModel(backbone)
        tuned.load_state_dict(run.weights)
    elif method in ("prompt", "prefix"):
        from pipeline.model.transformer import Transformer

        tuned = Transformer(virtual_config(ctx.base.cfg, method, ctx.cfg.virtual_tokens))
        if token_rows:
            train_token_rows(tuned, token_rows)
        tuned.load_state_dict(run.weights)
        merge_token_rows(tuned)  # the adapter's base/ carries the trained rows
        save_model_dir(out, tuned, tokenizer, meta, hf=False, log=ctx.log)  # transformers has no virtual tokens
        save_virtual_adapter(out, tuned, tokenizer)
    elif method == "lora":
        wrapped = lora_wrap(copy.deepcopy(ctx.base).cpu(), ctx.cfg.lora)
        if token_rows:
            train_token_rows(wrapped, token_rows)
        wrapped.load_state_dict(run.weights)
        wrapped.save_pretrained(str(out / ADAPTER_DIR))  # the unmerged adapter (peft's format)
        if token_rows:
            save_token_rows(wrapped, out / ADAPTER_DIR)
        tuned = merge_token_rows(wrapped).merge_and_unload()
        save_model_dir(out, tuned, tokenizer, meta, log=ctx.log)
    else:
        tuned = copy.deepcopy(ctx.base).cpu()
        tuned.load_state_dict(run.weights)
        save_model_dir(out, tuned, tokenizer, meta, log=ctx.log)
    chat.write_template(out, ctx.tok.chat_template)
    return tuned.to(ctx.device).eval()


def _training_summary(out: Path) -> dict:
    records = metrics.read(out / "metrics.jsonl")
    train = [r for r in records if "loss" in r]
    val = [r for r in records if any(k.startswith("val_") for k in r)]
    summary = {"final_train_loss": train[-1]["loss"] if train else None,
               "final_validation": {k: v for k, v in (val[-1] if val else {}).items() if k != "step"}}
    if train and "reward" in train[-1]:
        summary["reward_curve"] = [[r["step"], r["reward"]] for r in train]
    if train and "rewards/accuracies" in train[-1]:
        summary["train_reward_accuracy"] = train[-1]["rewards/accuracies"]
        summary["train_reward_margin"] = train[-1]["rewards/margins"]
    return summary


def publish(ctx, run: Trained) -> dict:
    cfg, out = ctx.cfg, Path(ctx.spec.out_dir)
    tuned = write_model(ctx, run, out)
    publish_run_files(run.ckpt_dir, out)
    stats = {**run.stats, **throughput(run.stats), **_training_summary(out), "method": cfg.method,
             "data": cfg.data, "examples_in": ctx.examples.records_in, "examples_kept": ctx.kept,
             "dropped": dict(ctx.dropped), "safety_examples": ctx.safety_examples,
             "optimizer_state_bytes": 8 * run.stats["trainable_params"]}  # AdamW: exp_avg + exp_avg_sq, fp32
    heldout = ctx.examples.heldout if cfg.heldout_examples else {}
    # the input model's replies, once: its exact match, and its own mistakes for DPO's scores
    start = heldout_replies(ctx, ctx.base, heldout) if cfg.method != "reward" else {}
    if cfg.method == "reward":
        stats.update(reward_accuracy(ctx, tuned))
    elif heldout:
        stats["heldout_exact_match"] = {"before": exact_match(heldout, start),
                                        "after": exact_match(heldout, heldout_replies(ctx, tuned, heldout))}
    if cfg.method == "dpo":
        stats.update(preference_scores(ctx, ctx.base, tuned, start))
    if cfg.method != "reward" and (cfg.safety.mix or cfg.safety.context_distillation):
        stats["refusal_rate"] = {"before": refusal_rates(ctx, ctx.base), "after": refusal_rates(ctx, tuned)}
    ctx.log.info("finetune %s: %s", cfg.method, {k: stats[k] for k in ("final_train_loss", "heldout_exact_match",
                                                                     "heldout_accuracy", "refusal_rate") if k in stats})
    return stats
