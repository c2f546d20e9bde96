"""The training loop every stage that trains shares: pretraining, fine-tuning, distillation.

nanoGPT's loop with the production pieces around it: gradient accumulation (no gradient
all-reduce until the last micro-step), autocast + dynamic loss scaling, clipping, the lr
schedule, periodic validation, atomic checkpoints, exact resume (a step's batch is a
function of the step, every RNG is restored), a progress bar, the metrics log, and torchrun
workers. What differs between stages comes in as a ``Job``:

    Job(name="distill",
        model=student,                    # the module trained; parameters with requires_grad=False
                                          # stay frozen (LoRA trains only its adapters)
        loss=loss_fn,                     # (model, micro_batch) -> loss, or (loss, {name: scalar})
                                          # extras averaged over micro-steps into metrics.jsonl
        batches=batch_fn,                 # step -> this rank's tc.grad_accum micro-batches; tensors
                                          # (in tuples, lists, dicts) are moved to the device here
        validate=val_fn,                  # model -> {metric: float}; every rank calls it (it may
                                          # all-reduce), every eval_every steps and at the end
        finish=finish_fn,                 # Trained -> stats, on rank 0 after the last step
        tokens_per_step=..., flops_per_token=...)   # throughput and MFU in the log

A stage launches it with ``run(spec, tc, log)``: ``spec.entry`` names a function
``module:function`` called as ``entry(spec, log)`` in this process, or in every torchrun
process when ``tc.world_size > 1`` (``python -m pipeline.core.train.worker SPEC.json``). The
entry builds its Job inside ``session(tc, log)`` and returns ``fit(job, tc, d, device,
ckpt_dir, log)``:

    def train(spec, log):
        cfg = MyConfig(**spec.config)
        with session(cfg.train, log) as (d, device):
            job = Job(name="distill", model=build_student(cfg).to(device), loss=kl_loss, ...)
            return fit(job, cfg.train, d, device, Path(spec.ckpt_dir), log)
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from tqdm import tqdm

from pipeline.core.errors import StageError
from pipeline.core.train import checkpoint, distributed, metrics, optim, parallel, precision

# Test hook for the resume tests: SIGKILL this process right after finishing that step.
KILL_AFTER_STEP_ENV = "LMDAG_TRAIN_KILL_AFTER_STEP"
WORKER_STATS = ".worker-stats.json"
WORKER_MODULE = "pipeline.core.train.worker"


@dataclass
class Spec:
    """Everything a process needs to train (JSON-serialisable, so torchrun workers can read it)."""

    entry: str  # "module:function", called as function(spec, log) -> stats on rank 0, None elsewhere
    config: dict  # the stage's config, as plain containers
    inputs: dict[str, str]  # role -> input directory
    out_dir: str  # the stage's (temporary) output directory
    ckpt_dir: str  # resumable checkpoints, outside out_dir

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> "Spec":
        return cls(**json.loads(Path(path).read_text()))


@dataclass
class Job:
    name: str  # the progress bar's label
    model: torch.nn.Module  # on its device, not yet wrapped (fit wraps it for DDP/FSDP)
    loss: Callable[[torch.nn.Module, Any], Any]
    batches: Callable[[int], Iterable[Any]]
    finish: Callable[["Trained"], dict]
    validate: Callable[[torch.nn.Module], dict] | None = None
    tokens_per_step: int = 0  # tokens one optimizer step processes (all ranks)
    flops_per_token: float = 0.0  # training FLOPs per token, for MFU (0 = not reported)
    stats: dict = field(default_factory=dict)  # extra stats the finish callback receives
    # The train.objective its loss and batches implement: another value in the train config
    # is refused rather than silently trained as this one.
    objective: str = "lm"


@dataclass
class Trained:
    """What the finish callback gets: the trained weights (full, name-keyed), how it ran."""

    weights: dict[str, torch.Tensor]
    stats: dict
    precision: precision.Precision
    device: torch.device
    ckpt_dir: Path


def transformer_blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The repeated blocks of the model, also when it is wrapped (peft, a reward head)."""
    for module in model.modules():
        if isinstance(getattr(module, "blocks", None), torch.nn.ModuleList):
            return module.blocks
    raise TypeError(f"{type(model).__name__} has no `blocks` (a ModuleList of transformer blocks)")


def apply_activation_checkpointing(blocks) -> None:
    """Recompute each block's activations in the backward instead of storing them (keeps the
    module tree, so state-dict names do not change)."""
    import functools

    from torch.utils.checkpoint import checkpoint as ckpt

    for block in blocks:
        block.forward = functools.partial(ckpt, block.forward, use_reentrant=False)


def can_compile(device, log) -> bool:
    """Inductor generates C++ on CPU: without a compiler, train eagerly (same results) and say so."""
    if device.type == "cpu" and not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        log.warning("train.compile: no C++ compiler found; training eagerly")
        return False
    return True


def prepare(model, tc, d, device, log=None):
    """The model as trained (activation checkpointing, compiled blocks, DDP/FSDP, in
    torchtitan's order) with its AdamW over the trainable parameters, lr schedule, precision
    and loss scaler."""
    import logging

    log = log or logging.getLogger("lmdag.train")
    model = parallel.parallelize(model, tc, transformer_blocks(model))  # pipeline stage, tensor parallel
    blocks = transformer_blocks(model)
    if tc.activation_checkpointing:
        apply_activation_checkpointing(blocks)
    if tc.compile and can_compile(device, log):
        for block in blocks:  # per block (torchtitan): one graph, reused by every layer
            block.compile()
    model = distributed.wrap(model, tc.strategy, tc.fsdp_cpu_offload, d, device, blocks)
    model = parallel.pipelined(model, tc, device)
    opt = optim.adamw(model, tc, device.type)
    prec = precision.resolve(tc.precision, device)
    return model, opt, optim.scheduler(opt, tc), prec, prec.scaler()


def to_device(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def lm_loss(model, batch):
    """Next-token cross-entropy on (inputs, targets); targets use -100 where nothing is scored."""
    x, y = batch
    return model(x, y)[1]


def optimizer_step(model, opt, scaler, prec, micro_batches, tc, device, loss_fn=lm_loss):
    """One optimizer step over ``tc.grad_accum`` micro-batches, as nanoGPT: gradients
    accumulate (all-reduced on the last micro-step only), are unscaled and clipped, then
    AdamW steps (skipped by the fp16 scaler on overflow). -> (mean loss, grad norm, extras)."""
    loss_acc = torch.zeros((), device=device)
    extras: dict[str, torch.Tensor] = {}
    for micro, batch in enumerate(micro_batches):
        batch = to_device(batch, device)
        with distributed.no_sync(model, micro == tc.grad_accum - 1):
            with prec.autocast():
                out = loss_fn(model, batch)
            loss, more = out if isinstance(out, tuple) else (out, {})
            scaler.scale(loss / tc.grad_accum).backward()
        loss_acc += loss.detach() / tc.grad_accum
        for k, v in more.items():
            extras[k] = extras.get(k, 0.0) + torch.as_tensor(v, device=device).detach().float() / tc.grad_accum
    grad_norm = None
    if tc.grad_clip > 0:
        scaler.unscale_(opt)
        if parallel.mesh() is not None:  # sharded and whole gradients side by side
            grad_norm = parallel.clip_grad_norm_(model, tc.grad_clip)
        else:
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)  # frozen: no grad, skipped
    scaler.step(opt)
    scaler.update()
    opt.zero_grad(set_to_none=True)
    return loss_acc, grad_norm, extras


@contextlib.contextmanager
def session(tc, log):
    """The process group, device, threads and determinism of one training process."""
    d = distributed.from_env()
    if d.world_size != tc.world_size:
        raise StageError(f"train.nproc x nnodes = {tc.world_size} but {d.world_size} processes are running")
    device = distributed.pick_device(tc.device, d)
    distributed.init(d, device, tc.strategy == "fsdp" and tc.fsdp_cpu_offload)
    parallel.setup(tc, device)
    if tc.fsdp_cpu_offload and device.type != "cuda":
        log.warning("train.fsdp_cpu_offload ignored: this run computes on the CPU already")
    old_threads = torch.get_num_threads()
    if device.type == "cpu" and tc.threads:
        torch.set_num_threads(tc.threads)  # 0 keeps torch's default (OMP_NUM_THREADS or the cores)
    if tc.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield d, device
    finally:
        torch.set_num_threads(old_threads)
        parallel.teardown()
        distributed.shutdown(d)


def _resume(ckpt_dir: Path, model, opt, sched, scaler, mlog, d, log) -> int:
    """The step to start from: the newest checkpoint's, or 0 (a fresh metrics log)."""
    resume_from = checkpoint.latest(ckpt_dir, log)  # a damaged checkpoint skipped is said in the step's log
    if resume_from is None:
        if d.main and mlog.path.exists():
            mlog.path.unlink()  # a run killed before its first checkpoint starts over
        return 0
    start = checkpoint.load(resume_from, model, opt, sched, scaler)["step"]
    if d.main:
        mlog.truncate_after(start)
    log.info("resumed from %s at step %d", resume_from, start)
    return start


def _train_record(done, loss_value, lr, job, tokens_rate, peak, d, grad_norm, prec, scaler, extras, elapsed):
    record = {"step": done, "loss": loss_value, "lr": lr, "tokens": done * job.tokens_per_step,
              "tokens_per_s": tokens_rate,
              "mfu": metrics.mfu(job.flops_per_token, tokens_rate, peak * d.world_size),
              "elapsed_s": elapsed}
    if grad_norm is not None:
        record["grad_norm"] = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
    if prec.name == "fp16":
        record["loss_scale"] = float(scaler.get_scale())
    record.update(extras)
    return record


def fit(job: Job, tc, d, device, ckpt_dir: Path, log) -> dict | None:
    """Train ``job.model`` for ``tc.steps`` optimizer steps, resuming from ``ckpt_dir``; rank 0
    returns ``job.finish(Trained(...))``, the other ranks None."""
    params = sum(p.numel() for p in {id(p): p for p in job.model.parameters()}.values())
    trainable = sum(p.numel() for p in {id(p): p for p in job.model.parameters() if p.requires_grad}.values())
    if not trainable:
        raise StageError(f"{job.name}: the model has no trainable parameters")
    if getattr(tc, "objective", "lm") != job.objective:
        raise StageError(f"{job.name}: train.objective={tc.objective} is not what this step trains "
                         f"({job.objective}); set train.objective={job.objective}")
    model, opt, sched, prec, scaler = prepare(job.model, tc, d, device, log)
    if parallel.is_pipelined(model) and job.loss is not lm_loss:
        raise StageError(f"{job.name}: train.pp > 1 trains next-token prediction only (its loss runs inside "
                         f"the pipeline schedule); use train.pp=1 here")
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    mlog = metrics.MetricsLog(ckpt_dir / "metrics.jsonl",
                              ckpt_dir / "tensorboard" if tc.tensorboard and d.main else None, log)
    start = _resume(ckpt_dir, model, opt, sched, scaler, mlog, d, log)
    peak, peak_source = metrics.peak_flops(device, tc.peak_tflops, torch.get_num_threads())
    log.info("%s: %s params (%s trainable), %.3g FLOPs/token; %d tokens/step; precision %s; "
             "%d process(es) %s; peak %.3g FLOP/s per process (%s)", job.name, f"{params:,}", f"{trainable:,}",
             job.flops_per_token, job.tokens_per_step, prec.name, d.world_size,
             tc.strategy if d.enabled else "", peak, peak_source)
    kill_after = int(os.environ.get(KILL_AFTER_STEP_ENV, "-1"))
    bar = tqdm(total=tc.steps, initial=start, desc=job.name, unit="step", dynamic_ncols=True,
               disable=None if (tc.progress and d.main) else True)
    t_log, tokens_log, t_start = time.perf_counter(), 0, time.perf_counter()
    last_rate = 0.0
    model.train()
    for step in range(start, tc.steps):
        if parallel.is_pipelined(model):  # the schedule runs forward and backward over the stages
            loss_acc, grad_norm, extras = model.optimizer_step(opt, prec, job.batches(step), tc)
        else:
            loss_acc, grad_norm, extras = optimizer_step(model, opt, scaler, prec, job.batches(step), tc, device, job.loss)
        lr = sched.get_last_lr()[0]
        sched.step()
        tokens_log += job.tokens_per_step
        done = step + 1
        bar.update(1)

        if done % tc.log_every == 0 or done == tc.steps:
            loss_value = distributed.mean(float(loss_acc), d, device)
            extras = {k: distributed.mean(float(v), d, device) for k, v in extras.items()}
            now = time.perf_counter()
            last_rate = tokens_log / max(now - t_log, 1e-9)
            t_log, tokens_log = now, 0
            record = _train_record(done, loss_value, lr, job, last_rate, peak, d, grad_norm, prec, scaler,
                                   extras, now - t_start)
            if d.main:
                mlog.write(record)
            bar.set_postfix(loss=f"{loss_value:.3f}", tok_s=f"{last_rate:,.0f}",
                            **({"mfu": f"{record['mfu']:.1%}"} if record["mfu"] is not None else {}))
        if job.validate is not None and (done % tc.eval_every == 0 or done == tc.steps):
            scores = job.validate(model)
            model.train()
            if d.main:
                mlog.write({"step": done, **scores})
                # the stage log (what a Snakemake run leaves behind) gets a line per validation
                log.info("step %d/%d: train loss %.4f, %s, %.0f tokens/s, elapsed %.0fs", done, tc.steps,
                         float(loss_acc), ", ".join(f"{k} {v:.4f}" for k, v in scores.items()), last_rate,
                         time.perf_counter() - t_start)
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
    stats = {"steps": tc.steps, "resumed_from_step": start, "params": params, "trainable_params": trainable,
             "flops_per_token": job.flops_per_token, "tokens": tc.steps * job.tokens_per_step,
             "tokens_per_step": job.tokens_per_step, "train_wall_s": round(wall, 2),
             "peak_flops_per_process": peak, "peak_flops_source": peak_source, "world_size": d.world_size,
             "precision": prec.name, **job.stats}
    return job.finish(Trained(weights, stats, prec, device, ckpt_dir))


def throughput(stats: dict) -> dict:
    """tokens/s and MFU over the steps this run trained (a resumed run counts its own)."""
    trained = (stats["steps"] - stats["resumed_from_step"]) * stats["tokens_per_step"]
    tokens_per_s = trained / max(stats["train_wall_s"], 1e-9)
    peak_total = stats["peak_flops_per_process"] * stats["world_size"]
    return {"tokens_per_s": round(tokens_per_s, 1),
            "mfu": round(stats["flops_per_token"] * tokens_per_s / peak_total, 4) if peak_total else None}


def publish_run_files(ckpt_dir: Path, out: Path) -> None:
    """The run's bookkeeping into the stage directory: the optimizer & co. of the last step
    (to continue training from), metrics.jsonl, and TensorBoard events if any."""
    last = checkpoint.latest(ckpt_dir)
    if last is not None:
        shutil.copy(last / "train_state.pt", out / "train_state.pt")
    shutil.copy(ckpt_dir / "metrics.jsonl", out / "metrics.jsonl")
    if (ckpt_dir / "tensorboard").is_dir():
        shutil.copytree(ckpt_dir / "tensorboard", out / "tensorboard")


# -- launching ------------------------------------------------------------------------------

def checkpoint_dir(out: Path) -> Path:
    """Where resumable checkpoints live: beside the stage directory, under a name derived
    from the final directory's (execute runs a stage in ``.tmp-<key>-<pid>``), so the rerun of
    a killed key finds them."""
    m = re.fullmatch(r"\.tmp-(.+)-\d+", out.name)
    return out.parent / f".ckpt-{m.group(1) if m else out.name}"


def call_entry(spec: Spec, log):
    module, _, name = spec.entry.partition(":")
    return getattr(importlib.import_module(module), name)(spec, log)


def run(spec: Spec, tc, log) -> dict:
    """Train in this process, or launch ``tc.world_size`` torchrun workers and wait; the stats
    of rank 0 either way."""
    ckpt = Path(spec.ckpt_dir)
    ckpt.mkdir(parents=True, exist_ok=True)
    if tc.world_size == 1:
        return call_entry(spec, log)
    spec.save(ckpt / "spec.json")
    distributed.launch(tc, ckpt / "spec.json", log, WORKER_MODULE)
    return read_worker_stats(Path(spec.out_dir))


def write_worker_stats(out: Path, stats: dict) -> None:
    (out / WORKER_STATS).write_text(json.dumps(stats, default=str))


def read_worker_stats(out: Path) -> dict:
    path = out / WORKER_STATS
    if not path.is_file():
        raise StageError(f"training: the workers finished without writing {path}")
    stats = json.loads(path.read_text())
    path.unlink()
    return stats
