"""RL on the model's own replies, as nanochat's chat_rl: for each prompt sample a group of
replies, score each (1 for a generated task's correct answer, or the reward model's score),
and push up the log-probability of the replies that beat their group's mean (GRPO's
group-relative advantage, scaled by the group's std as TRL's GRPOTrainer by default, or not,
as Dr. GRPO: rl.scale_rewards). Sampling and the update use the same weights, so the policy
ratio is 1 and needs no clipping.

A step's samples are seeded by (seed, sample index): a resumed run draws the same replies.
"""
from __future__ import annotations

from collections import Counter

import torch

from pipeline.core import chat
from pipeline.core.errors import StageError
from pipeline.core.train.batches import ShuffledOrder, micro_batch_start
from pipeline.core.train.loop import Job
from pipeline.finetune import batches as B
from pipeline.finetune import losses, replies


def task_reward(reply: str, answer: str) -> float:
    return float(reply.strip() == answer.strip())


def advantages(rewards: torch.Tensor, scale: str) -> torch.Tensor:
    """One group's advantages: reward minus the group's mean, over its std (unbiased, + 1e-4 as
    TRL) when ``scale`` is group. A group whose replies all score the same gets zeros."""
    centred = rewards - rewards.mean()
    return centred / (rewards.std() + 1e-4) if scale == "group" else centred


class Rollouts:
    """step -> micro-batches of sampled replies with their advantages."""

    def __init__(self, ctx, policy, prompts: list[dict], encoded: list[list[int]], reward_model=None):
        self.ctx, self.policy, self.prompts, self.encoded = ctx, policy, prompts, encoded
        self.reward_model = reward_model
        self.order = ShuffledOrder(len(prompts), ctx.cfg.seed)

    def rewards(self, i: int, reply_ids: list[list[int]]) -> torch.Tensor:
        ctx = self.ctx
        if self.reward_model is None:
            texts = [ctx.tok.decode([t for t in r if t not in ctx.stops], skip_special_tokens=True) for r in reply_ids]
            return torch.tensor([task_reward(t, self.prompts[i]["answer"]) for t in texts])
        rows = [B.Encoded(self.encoded[i] + r, [0] * len(self.encoded[i]) + [1] * len(r)) for r in reply_ids]
        x, y = B.collate(rows, ctx.pad_id)
        with torch.no_grad():
            return self.reward_model(x.to(ctx.device), losses.last_positions(y.to(ctx.device))).cpu()

    def micro(self, step: int, micro: int):
        ctx, rl = self.ctx, self.ctx.cfg.rl
        first = micro_batch_start(step, micro, ctx.rank, ctx.tc)
        rows, advantage, all_rewards = [], [], []
        for sample, i in zip(range(first, first + ctx.tc.batch_size), self.order.indices(first, ctx.tc.batch_size)):
            gen = torch.Generator(device=ctx.device).manual_seed(ctx.cfg.seed * 1_000_003 + sample)
            group = replies.sample_group(self.policy, self.encoded[i], rl.group_size, rl.max_new_tokens,
                                         rl.temperature, rl.top_k, ctx.stops, gen, ctx.device)
            reply_ids = [g[0] for g in group]
            r = self.rewards(int(i), reply_ids)
            all_rewards.append(r)
            advantage.append(advantages(r.float(), rl.scale_rewards))
            rows += [B.Encoded(self.encoded[i] + ids, [0] * len(self.encoded[i]) + [1] * len(ids)) for ids in reply_ids]
        x, y = B.collate(rows, ctx.pad_id)
        return x, y, torch.cat(advantage).float(), torch.cat(all_rewards).float().mean()

    def __call__(self, step: int):
        return (self.micro(step, m) for m in range(self.ctx.tc.grad_accum))


def _prompts(ctx, examples: list[dict], dropped: Counter) -> tuple[list[dict], list[list[int]]]:
    kept, encoded = [], []
    for ex in examples:
        ids = chat.encode_prompt(ctx.tok, ex["prompt"])
        if len(ids) + ctx.cfg.rl.max_new_tokens > ctx.seq_len + 1:
            dropped["too_long"] += 1
            continue
        kept.append(ex)
        encoded.append(ids)
    return kept, encoded


def rl_job(ctx) -> Job:
    import copy

    from pipeline.finetune import finish
    from pipeline.finetune.models import load_reward

    cfg = ctx.cfg
    prompts, encoded = _prompts(ctx, ctx.examples.train, ctx.dropped)
    val_prompts, _ = _prompts(ctx, ctx.examples.validation, ctx.dropped)
    ctx.kept = len(prompts) + len(val_prompts)
    if not prompts:
        raise StageError(f"finetune rl: no prompt leaves room for rl.max_new_tokens={cfg.rl.max_new_tokens} "
                         f"within seq_len={ctx.seq_len} (dropped {dict(ctx.dropped)})")
    if cfg.rl.reward == "task" and not all(p.get("answer") for p in prompts):
        raise StageError("finetune rl.reward=task needs an `answer` for every prompt (data=builtin has them); "
                         "use rl.reward=model with a reward input otherwise")
    reward_model = load_reward(ctx.spec.inputs["reward"], ctx.device) if cfg.rl.reward == "model" else None
    policy = copy.deepcopy(ctx.base)
    rollouts = Rollouts(ctx, policy, prompts, encoded, reward_model)

    def validate(model):
        if reward_model is not None or not val_prompts:
            return {}
        texts = replies.greedy(policy, ctx.tok, [p["prompt"] for p in val_prompts], cfg.rl.max_new_tokens,
                               ctx.stops, ctx.device)
        return {"val_reward": sum(task_reward(t, p["answer"]) for t, p in zip(texts, val_prompts)) / len(val_prompts)}

    seq = ctx.seq_len
    return Job(name="finetune rl", model=policy, loss=losses.grpo_loss, batches=rollouts, validate=validate,
               finish=lambda run: finish.publish(ctx, run),
               tokens_per_step=ctx.tc.global_batch() * cfg.rl.group_size * seq,
               flops_per_token=ctx.base.flops_per_token(seq),
               stats={"train_examples": len(prompts), "group_size": cfg.rl.group_size})
