"""train: how the model is trained — a top-level config group (conf/train/), read by pretrain.

Defaults follow nanoGPT / GPT-3 / Llama practice for small models: AdamW (0.9, 0.95) with
decoupled weight decay 0.1 on matrices only, linear warmup then cosine decay to 10% of the
peak learning rate, gradient clipping at 1.0. The knobs that do not change what is learned
(threads, logging, checkpoint cadence, launcher) are ``unkeyed``: outside the step key.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from pipeline.core.errors import StageError
from pipeline.core.step import unkeyed
from pipeline.core.train.objectives import objective_problems

SCHEDULES = ("cosine", "wsd", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
STRATEGIES = ("ddp", "fsdp")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class Config:
    # -- length ------------------------------------------------------------------------------
    steps: int = 400  # optimizer steps
    # -- batch: global batch = batch_size x grad_accum x data-parallel replicas (nproc x nnodes / (tp x pp))
    batch_size: int = 16  # sequences per process per micro-step
    grad_accum: int = 1  # micro-steps per optimizer step (gradients summed, loss averaged)
    seq_len: int = 0  # 0 = the model's max_seq_len
    # -- objective (pipeline/core/train/objectives.py): what a sequence teaches ----------------
    objective: str = "lm"  # lm | prefix_lm | span_corruption | ul2 (a per-sequence mixture)
    noise_density: float = 0.15  # span corruption: share of the tokens hidden (T5: 15%)
    mean_span_length: float = 3.0  # span corruption: mean length of a hidden span (T5: 3)
    # ul2: how often each denoiser is drawn (normalised): regular spans (the two above),
    # extreme spans (half the tokens, spans of 8), sequential (prefix LM)
    ul2_regular: float = 0.4
    ul2_extreme: float = 0.4
    ul2_sequential: float = 0.2
    # -- optimizer: AdamW with decoupled weight decay (Loshchilov & Hutter) ----------------------
    lr: float = 3e-3  # peak learning rate; small models tolerate large ones (nanoGPT char: 1e-3)
    min_lr_ratio: float = 0.1  # cosine/wsd end at lr x this (Chinchilla, Llama: 10%)
    weight_decay: float = 0.1  # on weight matrices only; norms and embeddings are not decayed
    beta1: float = 0.9
    beta2: float = 0.95  # 0.95 rather than 0.999: steadier with large lr (GPT-3, Llama)
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global gradient norm; 0 = off
    # "auto": fused AdamW kernel where torch has one for the device, else the foreach one.
    fused: str = "auto"  # auto | fused | foreach | loop
    # -- schedule -----------------------------------------------------------------------------
    schedule: str = "cosine"  # cosine | wsd (warmup-stable-decay, MiniCPM) | constant
    warmup_steps: int = 20  # linear warmup from 0 (GPT-3: ~0.3% of tokens; short runs need more)
    decay_frac: float = 0.2  # wsd: the last fraction of steps decays linearly to min lr
    # -- precision and memory ------------------------------------------------------------------
    # auto: bf16 autocast on GPUs that support it, fp16 (+loss scaling) on older GPUs, fp32 on CPU.
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    activation_checkpointing: bool = False  # recompute each block in the backward: less memory, ~30% slower
    compile: bool = False  # torch.compile each block (needs a C++ compiler on CPU; slow to start)
    deterministic: bool = False  # torch.use_deterministic_algorithms (CPU runs are already bitwise repeatable)
    # -- devices and processes -----------------------------------------------------------------
    device: str = "auto"  # auto | cpu | cuda
    nproc: int = 1  # processes per node; >1 launches torchrun (gloo on CPU, nccl on CUDA)
    nnodes: int = 1  # >1: torchrun on every node (under srun on Slurm), meeting at rdzv_endpoint
    strategy: str = "ddp"  # ddp | fsdp (FSDP2 fully_shard per block), over the data-parallel replicas
    # Model parallelism (pipeline/core/train/parallel.py): processes per tensor-parallel group
    # (each block's heads and MLP split between them) and pipeline stages (the blocks cut into
    # consecutive stages, train.grad_accum micro-batches flowing through them); the remaining
    # factor of nproc x nnodes is data parallel.
    tp: int = 1
    pp: int = 1
    pp_schedule: str = "gpipe"  # gpipe | 1f1b (1F1B holds fewer micro-batches' activations)
    fsdp_cpu_offload: bool = False  # FSDP: keep parameters, gradients and optimizer state on the CPU
    # multi-node: host:port of the c10d rendezvous; "" = the first node of the Slurm allocation
    rdzv_endpoint: str = unkeyed("")
    # what starts torchrun once per node: auto = srun inside a Slurm allocation (nnodes > 1),
    # or a command prefix, e.g. "srun --ntasks-per-node=1", "pdsh -w node[1-4]"
    launcher: str = unkeyed("auto")
    threads: int = unkeyed(0)  # torch threads per process; 0 = cores / processes
    # -- evaluation, checkpoints, logs --------------------------------------------------------
    eval_every: int = 100  # steps between validation losses
    eval_batches: int = 8  # global batches per periodic validation (the final one: final_eval_windows)
    checkpoint_every: int = unkeyed(100)  # steps between resumable checkpoints (and one at the end)
    keep_checkpoints: int = unkeyed(2)  # newest checkpoints kept while training
    log_every: int = unkeyed(10)  # steps between metrics.jsonl lines
    progress: bool = unkeyed(True)  # tqdm bar (hidden when stderr is not a terminal, tqdm's disable=None)
    tensorboard: bool = unkeyed(False)  # also write TensorBoard scalars (needs the tensorboard package)
    peak_tflops: float = unkeyed(0.0)  # for MFU; 0 = a table of GPUs, or a measured matmul peak on CPU

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes

    @property
    def dp(self) -> int:
        """Data-parallel replicas: the processes over the tensor x pipeline parallel groups."""
        return max(self.world_size // (self.tp * self.pp), 1)

    def data_rank(self, rank: int) -> int:
        """The replica process ``rank`` belongs to, in the (pp, dp, tp) mesh's row-major order."""
        return (rank // self.tp) % self.dp

    def global_batch(self) -> int:
        return self.batch_size * self.grad_accum * self.dp

    def job_resources(self) -> dict:
        """What a training step's Snakemake job asks of a cluster (a stage's ``resources``): the
        cores of one node's processes; for several nodes, all of them with one task each, which
        the job's own srun (launcher=auto) fills, so the executor plugin leaves the command to
        it (``mpi``); GPUs per node when training on CUDA."""
        res = {"threads": max(self.threads, 1) * self.nproc, "nodes": self.nnodes,
               # a day, not the hour of the other steps (a job cut short resumes from its checkpoint)
               "runtime": 24 * 60}
        if self.nnodes > 1:
            res.update(tasks=self.nnodes, mpi="srun")
        if self.device == "cuda":
            res["gres"] = f"gpu:{self.nproc}"
        return res

    def _parallel_problems(self) -> list[str]:
        problems = []
        if self.tp < 1 or self.pp < 1:
            return problems
        if self.world_size % (self.tp * self.pp):
            problems.append(f"train.tp x train.pp = {self.tp * self.pp} must divide the {self.world_size} processes "
                            f"(train.nproc x train.nnodes)")
        if self.tp > 1 and self.dp > 1 and self.strategy == "ddp":
            problems.append("train.tp > 1 with data-parallel replicas needs train.strategy=fsdp (DDP does not "
                            "compose with tensor-parallel DTensors)")
        if self.pp > 1 and self.precision == "fp16":
            problems.append("train.pp > 1 needs train.precision bf16 or fp32 (no fp16 loss scaling through the pipeline)")
        if self.pp > 1 and self.pp_schedule == "1f1b" and self.grad_accum < self.pp:
            problems.append(f"train.pp_schedule=1f1b needs train.grad_accum (the micro-batches) >= train.pp={self.pp}")
        return problems

    def validate(self) -> "Config":
        problems = []
        for key, allowed in (("schedule", SCHEDULES), ("precision", PRECISIONS),
                             ("strategy", STRATEGIES), ("device", DEVICES), ("pp_schedule", ("gpipe", "1f1b")),
                             ("fused", ("auto", "fused", "foreach", "loop"))):
            if getattr(self, key) not in allowed:
                problems.append(f"train.{key} must be one of {'|'.join(allowed)}, got {getattr(self, key)!r}")
        for key in ("steps", "batch_size", "grad_accum", "nproc", "nnodes", "eval_batches", "log_every", "tp", "pp"):
            if getattr(self, key) < 1:
                problems.append(f"train.{key} must be >= 1, got {getattr(self, key)}")
        if not 0 <= self.warmup_steps <= self.steps:
            problems.append(f"train.warmup_steps must be in [0, steps={self.steps}], got {self.warmup_steps}")
        if not 0 < self.decay_frac <= 1:
            problems.append(f"train.decay_frac must be in (0, 1], got {self.decay_frac}")
        if self.lr <= 0:
            problems.append(f"train.lr must be > 0, got {self.lr}")
        problems += self._parallel_problems()
        problems += objective_problems(self)
        in_slurm = "SLURM_JOB_ID" in os.environ
        if self.nnodes > 1 and not self.rdzv_endpoint and not in_slurm:
            problems.append("train.nnodes > 1 needs train.rdzv_endpoint=HOST:PORT (a host every node reaches), "
                            "or a Slurm allocation (its first node)")
        if self.nnodes > 1 and self.launcher == "auto" and not in_slurm:
            problems.append("train.nnodes > 1 outside a Slurm allocation needs train.launcher: a command that starts "
                            "torchrun once on every node (train.launcher=auto is srun inside one)")
        if problems:
            raise StageError("; ".join(problems))
        return self


def main(argv: list[str]) -> int:
    """``python -m pipeline train [train=gpu] [train.lr=1e-3 ...]``: the resolved training
    config, with the global batch it implies."""
    from omegaconf import OmegaConf

    from pipeline.config import compose

    if "-h" in argv or "--help" in argv:
        print(__doc__.strip() + "\n\nUsage: python -m pipeline train [train=PRESET] [train.KEY=VALUE ...]")
        return 0
    cfg = compose([a if a.startswith(("train", "experiment")) else f"train.{a}" for a in argv])
    tc = Config(**OmegaConf.to_container(cfg.train, resolve=True)).validate()
    print(OmegaConf.to_yaml(cfg.train, resolve=True))
    print(f"# global batch: {tc.global_batch()} sequences per optimizer step")
    return 0
