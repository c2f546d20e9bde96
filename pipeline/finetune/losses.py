"""The fine-tuning objectives, each a function (model, micro-batch) -> loss or (loss, metrics).

    sft       mean cross-entropy over the assistant's tokens (targets -100 elsewhere), the
              model's own fused loss kernel, as pretraining
    dpo       -log sigmoid(beta * ((log pi(c) - log pi(r)) - (log ref(c) - log ref(r)))), log-probs
              summed over each completion's tokens (Rafailov et al. 2023; TRL's sigmoid loss);
              metrics as TRL names them: rewards/chosen, rewards/rejected, rewards/accuracies,
              rewards/margins (reward = beta * (log pi - log ref)); rpo_alpha adds the chosen
              replies' token NLL (RPO)
    reward    Bradley-Terry: -log sigmoid(r(chosen) - r(rejected)) (InstructGPT's reward model)
    grpo      -sum(advantage * log pi(token)) / scored tokens over sampled replies (nanochat's
              chat_rl: on-policy, one update per sample, so no ratio or clipping is needed)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.finetune.batches import IGNORE


def sft_loss(model, batch):
    x, y = batch
    return model(x, y)[1]


def token_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) per position (B, T); 0 where the target is -100."""
    logp = -F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten().clamp(min=0), reduction="none")
    return logp.view(targets.shape) * (targets != IGNORE)


def sequence_logps(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed log-probability of each row's scored targets (B,)."""
    logits, _ = model(x)
    return token_logps(logits, y).sum(-1)


def dpo_terms(policy_c, policy_r, ref_c, ref_r, beta: float):
    """(per-pair losses, chosen rewards, rejected rewards)."""
    logits = (policy_c - policy_r) - (ref_c - ref_r)
    return -F.logsigmoid(beta * logits), beta * (policy_c - ref_c).detach(), beta * (policy_r - ref_r).detach()


def dpo_loss(reference, beta: float, rpo_alpha: float = 0.0):
    """The DPO objective against a frozen ``reference``; a micro-batch is (inputs, targets) of
    its chosen rows followed by its rejected rows. ``rpo_alpha`` > 0 adds that weight times the
    chosen replies' mean token NLL (RPO, Pang et al. 2024; TRL's ``rpo_alpha``, in TRL 1.x
    ``loss_type=["sigmoid", "sft"], loss_weights=[1, rpo_alpha]``): DPO alone can lower the
    chosen reply's likelihood as long as the rejected one falls faster."""

    def loss(model, batch):
        x, y = batch
        n = x.shape[0] // 2
        logits, _ = model(x)
        per_token = token_logps(logits, y)
        logps = per_token.sum(-1)
        with torch.no_grad():
            ref = sequence_logps(reference, x, y)
        losses, r_c, r_r = dpo_terms(logps[:n], logps[n:], ref[:n], ref[n:], beta)
        metrics = {"rewards/chosen": r_c.mean(), "rewards/rejected": r_r.mean(),
                   "rewards/accuracies": (r_c > r_r).float().mean(), "rewards/margins": (r_c - r_r).mean()}
        total = losses.mean()
        if rpo_alpha:
            nll = -per_token[:n].sum() / (y[:n] != IGNORE).sum().clamp(min=1)
            total = total + rpo_alpha * nll
            metrics["nll_loss"] = nll.detach()
        return total, metrics

    return loss


def last_positions(y: torch.Tensor) -> torch.Tensor:
    """Index of each row's last scored target: the reward is read where the reply ends."""
    scored = (y != IGNORE).long()
    return (scored * torch.arange(y.shape[1], device=y.device)).argmax(-1)


def reward_loss(model, batch):
    x, y = batch
    n = x.shape[0] // 2
    r = model(x, last_positions(y))
    margin = r[:n] - r[n:]
    return -F.logsigmoid(margin).mean(), {"accuracy": (margin > 0).float().mean(), "margin": margin.mean().detach()}


def grpo_loss(model, batch):
    """A micro-batch of sampled replies: (inputs, targets, per-row advantage, mean reward)."""
    x, y, advantages, mean_reward = batch
    logits, _ = model(x)
    logp = token_logps(logits, y)
    scored = (y != IGNORE).sum().clamp(min=1)
    loss = -(logp * advantages[:, None]).sum() / scored
    return loss, {"reward": mean_reward}
