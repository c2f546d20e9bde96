"""Pretraining as a job of the shared training loop (pipeline/core/train/loop.py): next-token
prediction on windows of the tokenized corpus, or the windows turned into train.objective's
(source, target) pairs (pipeline/core/train/objective_batches.py); validation loss on the
same objective over held-out windows.

    train(spec, log) -> stats (on rank 0; None elsewhere)     every process, alone or under torchrun
"""
from __future__ import annotations

from pathlib import Path

import torch

from pipeline.core.errors import StageError
from pipeline.core.train import evaluation, precision
from pipeline.core.train.batches import WindowSampler, eval_starts, micro_batch_start
# optimizer_step, prepare and the kill hook are re-exported for benchmarks/train.py and the resume test
from pipeline.core.train.loop import KILL_AFTER_STEP_ENV, Job, Spec, fit, lm_loss, optimizer_step, prepare, session  # noqa: F401

ENTRY = "pipeline.pretrain.loop:train"


def _windows(cfg, data, data_dir: Path):
    """(sequence length, the training sampler, validation window starts), checked against the model."""
    tc = cfg.train
    if data.vocab_size > cfg.model.vocab_size:
        raise StageError(f"the tokenizer has {data.vocab_size} ids but model.vocab_size is {cfg.model.vocab_size}")
    seq_len = tc.seq_len or cfg.model.max_seq_len
    if seq_len > cfg.model.max_seq_len:
        raise StageError(f"train.seq_len={seq_len} exceeds model.max_seq_len={cfg.model.max_seq_len}")
    try:
        sampler = WindowSampler(data.train, seq_len, cfg.seed)
        val_starts = eval_starts(len(data.val), seq_len, tc.eval_batches * tc.global_batch())
    except ValueError as err:
        raise StageError(f"pretrain: {data_dir}: {err}; use a shorter train.seq_len or more text") from None
    return seq_len, sampler, val_starts


def objective_batches(cfg, data, seq_len: int):
    """The objective's batch source, or None for next-token prediction (the windows as they are)."""
    from pipeline.core.train.objective_batches import ObjectiveBatches

    if cfg.train.objective == "lm":
        return None
    specials = data.meta.get("special_tokens", {})
    return ObjectiveBatches(cfg.train, seq_len, cfg.seed, specials.get("sentinels", []), specials.get("pad"),
                            encoder_decoder=cfg.model.arch == "encoder_decoder")


def flops_per_token(model, objective, seq_len: int) -> float:
    """A decoder runs seq_len positions whatever the objective; an encoder-decoder splits the
    tokens of a pair between its stacks: its cost per token at the objective's mean split."""
    if objective is None or not objective.encoder_decoder:
        return model.flops_per_token(seq_len)
    parts = [(p, S + U, model.flops_per_token(round(S), round(U))) for p, S, U in objective.mean_lengths()]
    return sum(p * n * f for p, n, f in parts) / sum(p * n for p, n, _ in parts)


def train(spec: Spec, log) -> dict | None:
    from pipeline.core.tokens import TokenData
    from pipeline.model import build
    from pipeline.pretrain import Config, finish

    cfg = Config.from_dict(spec.config)
    tc = cfg.train.validate()
    data_dir = Path(spec.inputs["tokens"])
    with session(tc, log) as (d, device):
        data = TokenData(data_dir)
        seq_len, sampler, val_starts = _windows(cfg, data, data_dir)
        torch.manual_seed(cfg.seed)  # every rank builds the same initial weights
        model = build(cfg.model).to(device)
        autocast = precision.resolve(tc.precision, device).autocast
        objective = objective_batches(cfg, data, seq_len)
        loss = lm_loss if objective is None else objective.loss(cfg.model.attention == "prefix")

        def batches(step):
            starts = (micro_batch_start(step, micro, d.rank, tc) for micro in range(tc.grad_accum))
            if objective is None:
                return (sampler.batch(first, tc.batch_size) for first in starts)
            return (objective.train_batch(sampler, first, tc.batch_size) for first in starts)

        def validate(wrapped):
            nats, n = evaluation.loss_sums(wrapped, data.val, val_starts, seq_len, tc.batch_size,
                                           autocast, device, d.rank, d.world_size, objective, loss)
            return {"val_loss": nats / max(n, 1)}

        job = Job(name="pretrain", model=model, loss=loss, batches=batches, validate=validate,
                  finish=lambda run: finish.publish(cfg, data, seq_len, Path(spec.out_dir), run, log,
                                                    objective, loss),
                  tokens_per_step=tc.global_batch() * seq_len,
                  flops_per_token=flops_per_token(model, objective, seq_len),
                  stats={"seq_len": seq_len}, objective=tc.objective)
        return fit(job, tc, d, device, Path(spec.ckpt_dir), log)
