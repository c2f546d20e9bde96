"""Fine-tuning as jobs of the shared training loop (pipeline/core/train/loop.py): one builder
per method turns the input model and the data into a Job (model, loss, batches, validation,
finish), so every method gets accumulation, precision, clipping, checkpoints, exact resume
and torchrun from the same code as pretraining.

    train(spec, log) -> stats (on rank 0; None elsewhere)     every process, alone or under torchrun
"""
from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pipeline.core import chat
from pipeline.core.errors import StageError
from pipeline.core.tasks import safety
from pipeline.core.train.loop import Job, fit, session, to_device
from pipeline.finetune import batches as B
from pipeline.finetune import data, losses, replies
from pipeline.finetune.models import (RewardModel, chat_token_ids, lora_wrap, train_token_rows, virtual_init_ids,
                                     virtual_model)

ADAPTER_METHODS = ("lora", "prompt", "prefix")  # the methods that freeze the model's weights


@dataclass
class Context:
    """What every builder needs: config, devices, the input model, its chat tokenizer, the data."""

    cfg: object
    tc: object
    spec: object
    d: object
    device: torch.device
    log: object
    model_dir: Path = None
    tok: object = None
    base: torch.nn.Module = None  # the input model, on the device
    seq_len: int = 0
    pad_id: int = 0
    stops: list = field(default_factory=list)
    examples: data.Examples = None
    dropped: Counter = field(default_factory=Counter)  # reason -> examples set aside
    kept: int = 0  # examples trained or validated on (examples_in = kept + dropped)
    safety_examples: int = 0  # built-in safety conversations (SFT) or preference pairs (DPO, reward) mixed in
    token_rows: list = field(default_factory=list)  # embedding rows trained beside an adapter
    policy_rejected: int | None = None  # dpo.rejected=policy: pairs whose rejected reply is the model's own

    @property
    def rank(self) -> int:
        return self.d.rank


def load_context(cfg, tc, spec, d, device, log) -> Context:
    from pipeline.model.io import load_model

    model_dir = Path(spec.inputs["model"])
    ctx = Context(cfg, tc, spec, d, device, log, model_dir=model_dir)
    ctx.tok = chat.hf_tokenizer(model_dir)
    ctx.base = load_model(model_dir, device)
    ctx.seq_len = min(tc.seq_len or ctx.base.cfg.max_seq_len, ctx.base.cfg.max_seq_len)  # longest example
    pad = ctx.tok.pad_token_id
    ctx.pad_id = pad if pad is not None else (ctx.tok.eos_token_id or 0)
    ctx.stops = replies.stop_ids(ctx.tok, model_dir)
    passages = data.corpus_passages(Path(spec.inputs["tokens"])) if spec.inputs.get("tokens") else None
    ctx.examples = data.load(cfg, passages)
    ctx.dropped.update(ctx.examples.dropped)
    return ctx


# -- supervised: sft, lora ------------------------------------------------------------------

def _safety_share(ctx: Context, pool: list[dict], n_task: int) -> list[dict]:
    """safety.mix of all training examples from ``pool`` (cycled: the set is small), or none."""
    mix = ctx.cfg.safety.mix
    n = max(round(mix / (1 - mix) * n_task), 1) if mix else 0
    return [copy.deepcopy(pool[i % len(pool)]) for i in range(n)]


def safety_examples(ctx: Context, n_task: int) -> list[dict]:
    """The safety mix: built-in refusals and look-alikes, safety.mix of all SFT examples; with
    context distillation the replies are the input model's own under the safety system turn."""
    pool = safety.conversations("train")
    rows = _safety_share(ctx, pool, n_task)
    if ctx.cfg.safety.context_distillation:  # (the config requires safety.mix); empty teacher replies are left out (counted)
        asks = [[{"role": "system", "content": safety.SAFETY_PREAMBLE}] + r["messages"][:-1] for r in pool]
        taught = replies.greedy(ctx.base, ctx.tok, asks, ctx.cfg.eval_max_new_tokens, ctx.stops, ctx.device)
        for k, r in enumerate(rows):  # row k is a copy of pool[k % len(pool)] (_safety_share cycles the pool)
            r["messages"][-1]["content"] = taught[k % len(pool)]
        rows = [r for r in rows if r["messages"][-1]["content"].strip()]
    ctx.safety_examples = len(rows)
    return [{"messages": r["messages"]} for r in rows]


def _supervised_rows(ctx: Context):
    rows = B.encode_all(ctx.tok, ctx.examples.train, "conversation", ctx.seq_len, ctx.dropped)
    val = B.encode_all(ctx.tok, ctx.examples.validation, "conversation", ctx.seq_len, ctx.dropped)
    ctx.kept = len(rows) + len(val)
    extra = safety_examples(ctx, len(ctx.examples.train))
    rows += B.encode_all(ctx.tok, extra, "conversation", ctx.seq_len, Counter())
    train = ctx.examples.train + extra
    if not rows:
        raise StageError(f"finetune: every example is longer than seq_len={ctx.seq_len} tokens (dropped {dict(ctx.dropped)})")
    if ctx.cfg.packing:
        rows = B.pack(rows, ctx.seq_len, ctx.cfg.seed)
    return rows, val, len(train)


def mean_length(rows) -> float:
    """Tokens per row on average: throughput counts the tokens a step reads, not the context."""
    return sum(len(r.ids) - 1 for r in rows) / max(len(rows), 1)


def _mean_loss(model, rows, loss_fn, collate, size: int) -> dict:
    totals: dict[str, float] = {}
    with torch.no_grad():
        was = model.training
        model.eval()
        for chunk in B.batched(rows, size):
            out = loss_fn(model, to_device(collate(chunk), next(model.parameters()).device))
            loss, more = out if isinstance(out, tuple) else (out, {})
            for k, v in {"loss": loss, **more}.items():
                totals[k] = totals.get(k, 0.0) + float(v) * len(chunk)
        model.train(was)
    return {f"val_{k.replace('/', '_')}": v / max(len(rows), 1) for k, v in totals.items()}


def token_rows(ctx: Context, rows) -> list[int]:
    """The embedding rows an adapter method trains too (finetune.trainable_tokens)."""
    kind = ctx.cfg.trainable_tokens
    if kind == "none":
        return []
    ids = set(chat_token_ids(ctx.tok))
    if kind == "data":
        ids.update(t for r in rows for t in r.ids)
    return sorted(ids)


def supervised_job(ctx: Context) -> Job:
    from pipeline.finetune import finish

    cfg = ctx.cfg
    rows, val, n_train = _supervised_rows(ctx)
    model = ctx.base
    if cfg.method == "lora":
        model = lora_wrap(copy.deepcopy(ctx.base), cfg.lora)
    elif cfg.method in ("prompt", "prefix"):
        model = virtual_model(ctx.base, cfg.method, cfg.virtual_tokens, virtual_init_ids(ctx.tok))
    elif cfg.method == "sft":
        model = copy.deepcopy(ctx.base)
    ctx.token_rows = token_rows(ctx, rows) if cfg.method in ADAPTER_METHODS else []
    if ctx.token_rows:
        train_token_rows(model, ctx.token_rows)
    collate = lambda r: B.collate(r, ctx.pad_id)  # noqa: E731
    return Job(name=f"finetune {cfg.method}", model=model, loss=losses.sft_loss,
               batches=B.StepBatches(rows, ctx.tc, ctx.rank, cfg.seed, collate),
               validate=lambda m: _mean_loss(m, val, losses.sft_loss, collate, ctx.tc.batch_size),
               finish=lambda run: finish.publish(ctx, run),
               tokens_per_step=round(ctx.tc.global_batch() * mean_length(rows)),
               flops_per_token=ctx.base.flops_per_token(ctx.seq_len),
               stats={"train_rows": len(rows), "train_examples": n_train, "trained_token_rows": len(ctx.token_rows)})


# -- preferences: dpo, reward ---------------------------------------------------------------

def _pair_rows(ctx: Context):
    if ctx.cfg.method == "dpo" and ctx.cfg.dpo.rejected == "policy":
        got = replies.greedy(ctx.base, ctx.tok, [p["prompt"] for p in ctx.examples.train],
                             ctx.cfg.eval_max_new_tokens, ctx.stops, ctx.device)
        ctx.examples.train, replaced = replies.own_mistakes(ctx.examples.train, got)
        ctx.policy_rejected = sum(replaced)
        ctx.log.info("dpo.rejected=policy: %d of %d rejected replies are the input model's own",
                     ctx.policy_rejected, len(replaced))
    rows = B.encode_all(ctx.tok, ctx.examples.train, "pair", ctx.seq_len, ctx.dropped)
    val = B.encode_all(ctx.tok, ctx.examples.validation, "pair", ctx.seq_len, ctx.dropped)
    ctx.kept = len(rows) + len(val)
    # The safety mix as preferences (after the policy's replies replaced the task pairs' rejected
    # ones: a safety pair keeps its willing or refusing rejected reply, which is the point of it)
    extra = [{k: r[k] for k in ("prompt", "chosen", "rejected")}
             for r in _safety_share(ctx, safety.preference_pairs("train"), len(ctx.examples.train))]
    ctx.safety_examples = len(extra)
    rows += B.encode_all(ctx.tok, extra, "pair", ctx.seq_len, Counter())
    if not rows:
        raise StageError(f"finetune: every pair is longer than seq_len={ctx.seq_len} tokens (dropped {dict(ctx.dropped)})")
    return rows, val


def reference_model(ctx: Context):
    from pipeline.model.io import load_model

    path = ctx.spec.inputs.get("reference")
    ref = load_model(path, ctx.device) if path else copy.deepcopy(ctx.base)
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref.eval()


def preference_job(ctx: Context) -> Job:
    from pipeline.finetune import finish

    cfg = ctx.cfg
    rows, val = _pair_rows(ctx)
    collate = lambda r: B.collate_pairs(r, ctx.pad_id)  # noqa: E731
    if cfg.method == "dpo":
        model, loss = copy.deepcopy(ctx.base), losses.dpo_loss(reference_model(ctx), cfg.dpo.beta, cfg.dpo.rpo_alpha)
    else:
        torch.manual_seed(cfg.seed)  # the head's initial weights, the same on every rank
        model, loss = RewardModel(copy.deepcopy(ctx.base)).to(ctx.device), losses.reward_loss
    return Job(name=f"finetune {cfg.method}", model=model, loss=loss,
               batches=B.StepBatches(rows, ctx.tc, ctx.rank, cfg.seed, collate),
               validate=lambda m: _mean_loss(m, val, loss, collate, ctx.tc.batch_size),
               finish=lambda run: finish.publish(ctx, run),
               tokens_per_step=round(2 * ctx.tc.global_batch() * mean_length([r for pair in rows for r in pair])),
               flops_per_token=ctx.base.flops_per_token(ctx.seq_len),
               stats={"train_rows": len(rows), "train_examples": len(rows),
                      **({"policy_rejected": ctx.policy_rejected} if ctx.policy_rejected is not None else {})})


def train(spec, log) -> dict | None:
    from pipeline.finetune import Config

    cfg = Config(**spec.config)
    tc = cfg.training()
    with session(tc, log) as (d, device):
        # LoRA's, the soft prompt's and the prefix's initial weights come from torch's global
        # generator, which an imported library seeds at random (torch.initial_seed() differed from
        # process to process): unseeded, two runs of one LoRA step trained different adapters.
        torch.manual_seed(cfg.seed)
        ctx = load_context(cfg, tc, spec, d, device, log)
        if cfg.method == "rl":
            from pipeline.finetune.rl import rl_job

            job = rl_job(ctx)
        elif cfg.method in ("dpo", "reward"):
            job = preference_job(ctx)
        else:
            job = supervised_job(ctx)
        return fit(job, tc, d, device, Path(spec.ckpt_dir), log)
