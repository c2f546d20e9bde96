"""Processes: the torchrun launch, the process group, and DDP / FSDP2 wrapping.

One process trains in the stage's own process. With ``train.nproc > 1`` (or nnodes > 1) the
stage launches

    torchrun --standalone --nproc_per_node=N -m pipeline.core.train.worker SPEC.json

and waits for it. Across M nodes the same torchrun command runs once on every node, its
agents meeting at a c10d rendezvous:

    srun --nodes=M --ntasks-per-node=1 torchrun --nnodes=M --nproc-per-node=N \
        --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 --rdzv-id=JOB -m pipeline.core.train.worker SPEC.json

Inside a Slurm allocation ``train.launcher=auto`` is that srun and the endpoint is the first
node of the allocation; elsewhere give ``train.launcher`` (whatever starts a command once per
node) and ``train.rdzv_endpoint``. torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; gloo runs the
collectives on CPU, nccl on CUDA.
"""
from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from pipeline.core.errors import StageError


@dataclass
class Dist:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def from_env() -> Dist:
    return Dist(int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
                int(os.environ.get("WORLD_SIZE", 1)))


def pick_device(name: str, d: Dist) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise StageError("train.device=cuda but torch sees no CUDA device")
        torch.cuda.set_device(d.local_rank)
        return torch.device("cuda", d.local_rank)
    return torch.device("cpu")


def init(d: Dist, device: torch.device, cpu_offload: bool = False) -> None:
    if d.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda" and cpu_offload:
            # offloaded gradients are CPU tensors: their norm (clipping) all-reduces over gloo,
            # as torchtitan sets it up
            backend = "cuda:nccl,cpu:gloo"
        dist.init_process_group(backend)


def shutdown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def mean(value: float, d: Dist, device: torch.device) -> float:
    """The mean of a scalar over all processes (for logging the loss every rank saw)."""
    if not d.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / d.world_size


def wrap(model: torch.nn.Module, strategy: str, cpu_offload: bool, d: Dist, device: torch.device,
         blocks=None) -> torch.nn.Module:
    """DDP: a full replica per process, gradients all-reduced in buckets during backward.
    FSDP2: each block's parameters sharded over the processes (all-gathered for its forward
    and backward, gradients reduce-scattered), then the root (embedding, norm, head).
    ``blocks``: the repeated blocks when they are not ``model.blocks`` (a wrapped model)."""
    from pipeline.core.train import parallel

    dp_mesh = parallel.mesh("dp")  # with tensor/pipeline parallelism: the replicas only
    if not d.enabled or (dp_mesh is not None and dp_mesh.size() == 1):
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                   process_group=dp_mesh.get_group() if dp_mesh is not None else None)
    from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard

    # Offloading to the CPU means something only when computing on a GPU.
    kwargs = {"offload_policy": CPUOffloadPolicy()} if cpu_offload and device.type == "cuda" else {}
    if dp_mesh is not None:
        kwargs["mesh"] = dp_mesh
    for block in (model.blocks if blocks is None else blocks):
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    return model


def no_sync(model: torch.nn.Module, last_micro: bool):
    """Skip the gradient all-reduce on all but the last micro-step (DDP's no_sync; FSDP2's
    set_requires_gradient_sync)."""
    import contextlib

    if hasattr(model, "no_sync") and not last_micro:
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(last_micro)
    return contextlib.nullcontext()


RDZV_PORT = 29500  # torchrun's default port, on the first node of a Slurm allocation


def slurm_nodes() -> list[str]:
    """The host names of this Slurm allocation, in order ([] outside one)."""
    nodelist = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST")
    if not nodelist:
        return []
    try:  # "gpu[01-04],cpu7" -> one name a line
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as err:
        raise StageError(f"cannot expand SLURM_JOB_NODELIST={nodelist!r} with scontrol: {err}") from None
    return out.stdout.split()


def rendezvous(cfg, spec: Path) -> tuple[str, str]:
    """(host:port, id) of the multi-node c10d rendezvous: train.rdzv_endpoint, or the first node
    of the Slurm allocation; the id is the Slurm job's (or the spec's path), the same on every node."""
    endpoint = cfg.rdzv_endpoint
    if not endpoint:
        nodes = slurm_nodes()
        if not nodes:
            raise StageError(f"train.nnodes={cfg.nnodes} outside a Slurm allocation needs "
                             "train.rdzv_endpoint=HOST:PORT (a host every node reaches, usually the first)")
        endpoint = f"{nodes[0]}:{RDZV_PORT}"
    rdzv_id = os.environ.get("SLURM_JOB_ID") or hashlib.sha256(str(Path(spec).resolve()).encode()).hexdigest()[:12]
    return endpoint, rdzv_id


def launcher(cfg) -> list[str]:
    """What starts torchrun once per node: train.launcher as given; for ``auto``, srun over the
    allocation's nodes when nnodes > 1 (and nothing on one node)."""
    if cfg.launcher != "auto":
        return shlex.split(cfg.launcher)
    if cfg.nnodes == 1:
        return []
    if "SLURM_JOB_ID" not in os.environ:
        raise StageError(f"train.nnodes={cfg.nnodes}: train.launcher=auto starts torchrun on every node with srun "
                         "inside a Slurm allocation; elsewhere set train.launcher to a command that runs it once per "
                         "node (pdsh, mpirun -npernode 1, ...)")
    cmd = ["srun", f"--nodes={cfg.nnodes}", f"--ntasks={cfg.nnodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    if os.environ.get("SLURM_CPUS_PER_TASK"):  # since Slurm 22.05 srun does not inherit sbatch's value
        cmd.append(f"--cpus-per-task={os.environ['SLURM_CPUS_PER_TASK']}")
    return cmd


def torchrun_command(cfg, spec: Path, worker: str) -> list[str]:
    """torchrun running ``python -m <worker> SPEC`` in every process (``worker``: a module name)."""
    cmd = launcher(cfg) + [sys.executable, "-m", "torch.distributed.run"]
    if cfg.nnodes > 1:
        endpoint, rdzv_id = rendezvous(cfg, spec)
        cmd += [f"--nnodes={cfg.nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", f"--rdzv-id={rdzv_id}"]
    else:
        cmd += ["--standalone"]
    cmd += [f"--nproc-per-node={cfg.nproc}", "-m", worker, str(spec)]
    return cmd


def launch(cfg, spec: Path, log, worker: str) -> None:
    """Run the workers and wait; a failure names the command and where its log is."""
    cmd = torchrun_command(cfg, spec, worker)
    log.info("launching %s", " ".join(cmd))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[3]),
                                                        os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    if cfg.threads or "OMP_NUM_THREADS" not in env:
        # torchrun would otherwise pin every worker to 1 thread; share the cores instead.
        env["OMP_NUM_THREADS"] = str(cfg.threads or max(1, (os.cpu_count() or 1) // cfg.nproc))
    proc = subprocess.run(cmd, env=env)
    if proc.returncode != 0:
        raise StageError(f"{worker}: the {cfg.world_size}-process run failed (exit {proc.returncode}): "
                         f"{' '.join(cmd)}; see the worker output above and {spec.parent}/")
