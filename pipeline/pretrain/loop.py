"""The training loop: one function every process runs, alone or under torchrun.

    train(spec, log) -> stats (on rank 0; None elsewhere)

nanoGPT's loop with the production pieces around it: gradient accumulation (no gradient
all-reduce until the last micro-step), autocast + dynamic loss scaling, clipping, the lr
schedule, periodic validation, atomic checkpoints, and exact resume (the batch of a step is
a function of the step, and every RNG is restored).
"""
from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from pipeline.core.train import checkpoint, distributed, evaluation, metrics, optim, precision
from pipeline.core.train.batches import WindowSampler, eval_starts, micro_batch_start
from pipeline.core.errors import StageError

# Test hook for the resume test: SIGKILL this process right after finishing that step.
KILL_AFTER_STEP_ENV = "LMDAG_PRETRAIN_KILL_AFTER_STEP"


@dataclass
class Spec:
    """Everything a worker needs (JSON-serialisable, so torchrun workers can read it)."""

    config: dict  # the pretrain stage subtree
    data_dir: str  # the tokenize stage directory
    out_dir: str  # the stage's (temporary) output directory
    ckpt_dir: str  # resumable checkpoints, outside out_dir

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> "Spec":
        return cls(**json.loads(Path(path).read_text()))


def apply_activation_checkpointing(model) -> None:
    """Recompute each block's activations in the backward instead of storing them (keeps the
    module tree, so state-dict names do not change)."""
    import functools

    from torch.utils.checkpoint import checkpoint as ckpt

    for block in model.blocks:
        block.forward = functools.partial(ckpt, block.forward, use_reentrant=False)


def can_compile(device) -> bool:
    """Inductor generates C++ on CPU: without a compiler, train eagerly (same results) and say so."""
    import shutil

    if device.type == "cpu" and not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        import logging

        logging.getLogger("lmdag.pretrain").warning("train.compile: no C++ compiler found; training eagerly")
        return False
    return True


def prepare(model, tc, d, device):
    """The model as trained (activation checkpointing, compiled blocks, DDP/FSDP, in
    torchtitan's order) with its AdamW, lr schedule, precision and loss scaler."""
    if tc.activation_checkpointing:
        apply_activation_checkpointing(model)
    if tc.compile and can_compile(device):
        for block in model.blocks:  # per block (torchtitan): one graph, reused by every layer
            block.compile()
    model = distributed.wrap(model, tc.strategy, tc.fsdp_cpu_offload, d, device)
    opt = optim.adamw(model, tc, device.type)
    prec = precision.resolve(tc.precision, device)
    return model, opt, optim.scheduler(opt, tc), prec, prec.scaler()


def optimizer_step(model, opt, scaler, prec, micro_batches, tc, device):
    """One optimizer step over ``tc.grad_accum`` (inputs, targets) micro-batches, as nanoGPT:
    gradients accumulate (all-reduced on the last micro-step only), are unscaled and clipped,
    then AdamW steps (skipped by the fp16 scaler on overflow). -> (mean loss, grad norm)."""
    loss_acc = torch.zeros((), device=device)
    for micro, (x, y) in enumerate(micro_batches):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with distributed.no_sync(model, micro == tc.grad_accum - 1):
            with prec.autocast():
                _, loss = model(x, y)
            scaler.scale(loss / tc.grad_accum).backward()
        loss_acc += loss.detach() / tc.grad_accum
    grad_norm = None
    if tc.grad_clip > 0:
        scaler.unscale_(opt)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
    scaler.step(opt)
    scaler.update()
    opt.zero_grad(set_to_none=True)
    return loss_acc, grad_norm


def train(spec: Spec, log) -> dict | None:
    from pipeline.pretrain import Config

    cfg = Config.from_dict(spec.config)
    tc = cfg.train.validate()
    d = distributed.from_env()
    if d.world_size != tc.world_size:
        raise StageError(f"train.nproc x nnodes = {tc.world_size} but {d.world_size} processes are running")
    device = distributed.pick_device(tc.device, d)
    distributed.init(d, device, tc.strategy == "fsdp" and tc.fsdp_cpu_offload)
    if tc.fsdp_cpu_offload and device.type != "cuda":
        log.warning("train.fsdp_cpu_offload ignored: this run computes on the CPU already")
    old_threads = torch.get_num_threads()
    if device.type == "cpu" and tc.threads:
        torch.set_num_threads(tc.threads)  # 0 keeps torch's default (OMP_NUM_THREADS or the cores)
    if tc.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        return _train(cfg, Path(spec.data_dir), Path(spec.out_dir), Path(spec.ckpt_dir), d, device, log)
    finally:
        torch.set_num_threads(old_threads)
        distributed.shutdown(d)


def _train(cfg, data_dir: Path, out: Path, ckpt_dir: Path, d, device, log) -> dict | None:
    from pipeline.model import build
    from pipeline.core.tokens import TokenData

    tc = cfg.train
    data = TokenData(data_dir)
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

    torch.manual_seed(cfg.seed)  # every rank builds the same initial weights
    model = build(cfg.model).to(device)
    flops_per_token = model.flops_per_token(seq_len)
    n_params = model.num_params()
    model, opt, sched, prec, scaler = prepare(model, tc, d, device)

    ckpt_dir.mkdir(parents=True, exist_ok=True)
    mlog = metrics.MetricsLog(ckpt_dir / "metrics.jsonl",
                              ckpt_dir / "tensorboard" if tc.tensorboard and d.main else None, log)
    start = 0
    resume_from = checkpoint.latest(ckpt_dir)
    if resume_from is not None:
        start = checkpoint.load(resume_from, model, opt, sched, scaler)["step"]
        if d.main:
            mlog.truncate_after(start)
        log.info("resumed from %s at step %d", resume_from, start)
    elif d.main and mlog.path.exists():
        mlog.path.unlink()  # a run killed before its first checkpoint starts over

    tokens_per_step = tc.global_batch() * seq_len
    peak, peak_source = metrics.peak_flops(device, tc.peak_tflops, torch.get_num_threads())
    log.info("model %s params, %.3g FLOPs/token at seq_len %d; global batch %d x %d tokens; "
             "precision %s; %d process(es) %s; peak %.3g FLOP/s per process (%s)",
             f"{n_params:,}", flops_per_token, seq_len, tc.global_batch(), seq_len, prec.name,
             d.world_size, tc.strategy if d.enabled else "", peak, peak_source)
    kill_after = int(os.environ.get(KILL_AFTER_STEP_ENV, "-1"))
    bar = tqdm(total=tc.steps, initial=start, desc="pretrain", unit="step", dynamic_ncols=True,
               disable=None if (tc.progress and d.main) else True)
    t_log, tokens_log, t_start = time.perf_counter(), 0, time.perf_counter()
    last_rate = 0.0
    model.train()
    for step in range(start, tc.steps):
        micro_batches = (sampler.batch(micro_batch_start(step, micro, d.rank, tc), tc.batch_size)
                         for micro in range(tc.grad_accum))
        loss_acc, grad_norm = optimizer_step(model, opt, scaler, prec, micro_batches, tc, device)
        lr = sched.get_last_lr()[0]
        sched.step()
        tokens_log += tokens_per_step
        done = step + 1
        bar.update(1)

        if done % tc.log_every == 0 or done == tc.steps:
            loss_value = distributed.mean(float(loss_acc), d, device)
            now = time.perf_counter()
            last_rate = tokens_log / max(now - t_log, 1e-9)
            t_log, tokens_log = now, 0
            record = {"step": done, "loss": loss_value, "lr": lr, "tokens": done * tokens_per_step,
                      "tokens_per_s": last_rate,
                      "mfu": metrics.mfu(flops_per_token, last_rate, peak * d.world_size),
                      "elapsed_s": now - t_start}
            if grad_norm is not None:
                record["grad_norm"] = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
            if prec.name == "fp16":
                record["loss_scale"] = float(scaler.get_scale())
            if d.main:
                mlog.write(record)
            bar.set_postfix(loss=f"{loss_value:.3f}", tok_s=f"{last_rate:,.0f}", mfu=f"{record['mfu']:.1%}")
        if done % tc.eval_every == 0 or done == tc.steps:
            nats, n = evaluation.loss_sums(model, data.val, val_starts, seq_len, tc.batch_size,
                                           prec.autocast, device, d.rank, d.world_size)
            if d.main:
                mlog.write({"step": done, "val_loss": nats / max(n, 1)})
                # the stage log (what a Snakemake run leaves behind) gets a line per validation
                log.info("step %d/%d: train loss %.4f, val loss %.4f, %.0f tokens/s, elapsed %.0fs",
                         done, tc.steps, float(loss_acc), nats / max(n, 1), last_rate, time.perf_counter() - t_start)
        if done % tc.checkpoint_every == 0 or done == tc.steps:
            checkpoint.save(ckpt_dir, done, model, opt, sched, scaler, done * tc.global_batch(),
                            tc.keep_checkpoints, d.main)
        if done == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
    bar.close()
    mlog.close()
    wall = time.perf_counter() - t_start

    weights = checkpoint.model_state(model)  # collective under FSDP: every rank gathers
    if not d.main:
        return None
    from pipeline.pretrain import finish

    return finish.publish(cfg, data, weights, seq_len, prec, out, ckpt_dir, device, log,
                          {"steps": tc.steps, "resumed_from_step": start, "params": n_params,
                           "flops_per_token": flops_per_token, "tokens": tc.steps * tokens_per_step,
                           "tokens_per_step": tokens_per_step,
                           "train_wall_s": round(wall, 2), "peak_flops_per_process": peak,
                           "peak_flops_source": peak_source, "world_size": d.world_size,
                           "precision": prec.name, "seq_len": seq_len})


WORKER_STATS = ".worker-stats.json"


def write_worker_stats(out: Path, stats: dict) -> None:
    (out / WORKER_STATS).write_text(json.dumps(stats, default=str))


def read_worker_stats(out: Path) -> dict:
    path = out / WORKER_STATS
    if not path.is_file():
        raise StageError(f"pretrain: the workers finished without writing {path}")
    stats = json.loads(path.read_text())
    path.unlink()
    return stats
