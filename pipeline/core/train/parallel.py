"""Tensor and pipeline parallelism from PyTorch itself, composed with data parallelism the way
torchtitan composes them: the processes form a (pp, dp, tp) device mesh.

    train.tp=T   each block's attention and MLP split over T processes (Megatron-LM's layout,
                 DTensor ``parallelize_module``): q/k/v and gate/up column-parallel, o and down
                 row-parallel, so a block costs one all-reduce forward and one backward; the
                 heads and MLP channels are divided between the processes
    train.pp=P   the blocks cut into P consecutive stages (``torch.distributed.pipelining``);
                 each step's ``train.grad_accum`` micro-batches flow through them (GPipe or 1F1B)
    the rest     nproc x nnodes / (T x P) data-parallel replicas: DDP, or FSDP2 over the mesh's
                 dp dimension (train.strategy=fsdp; with TP that is 2-D FSDP + TP)

Order of application (torchtitan's parallelize_llama): pipeline split, tensor parallel,
activation checkpointing, compile, data parallel. Every rank of a pipeline or tensor-parallel
group reads the same batches (``Config.data_rank``), so the run trains what one process would
train on the same global batch. The embedding, final norm and output head stay whole on every
tensor-parallel rank; tied embeddings on the first and last pipeline stage get their
gradients summed between the two (Megatron does the same), so both copies stay equal.
"""
from __future__ import annotations

import contextlib
import dataclasses
import types

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from pipeline.core.errors import StageError

_MESH = None  # the (pp, dp, tp) DeviceMesh of this process group, when tp or pp > 1
_TIED = None  # the process group of the first and last pipeline stage (tied embeddings)


def setup(tc, device: torch.device) -> None:
    """Build the mesh after the process group is up (every rank calls it)."""
    global _MESH, _TIED
    if tc.tp * tc.pp == 1:
        return
    from torch.distributed.device_mesh import init_device_mesh

    _MESH = init_device_mesh(device.type, (tc.pp, tc.dp, tc.tp), mesh_dim_names=("pp", "dp", "tp"))
    if tc.pp > 2:  # new_group is collective: every rank makes every pair, in the same order
        ranks = _MESH.mesh
        for dp_i in range(tc.dp):
            for tp_i in range(tc.tp):
                pair = [int(ranks[0, dp_i, tp_i]), int(ranks[-1, dp_i, tp_i])]
                group = dist.new_group(pair)
                if dist.get_rank() in pair:
                    _TIED = group
    elif tc.pp == 2:
        _TIED = _MESH["pp"].get_group()


def teardown() -> None:
    global _MESH, _TIED
    _MESH = _TIED = None


def mesh(dim: str | None = None):
    if _MESH is None:
        return None
    return _MESH if dim is None else _MESH[dim]


def data_coords(rank: int, world: int) -> tuple[int, int]:
    """(data-parallel rank, replicas) of global ``rank``: ranks that hold parts of one model
    replica (tensor or pipeline parallel) read the same data."""
    if _MESH is None or world == 1:  # world 1: a caller working alone (rank 0's final scoring)
        return rank, world
    return _MESH["dp"].get_local_rank(), _MESH["dp"].size()


def data_group():
    """The group that sums per-replica values (None: the whole world)."""
    return None if _MESH is None else _MESH["dp"].get_group()


# -- tensor parallelism ---------------------------------------------------------------------

def check_model(model_cfg, tc) -> None:
    problems = []
    for key in ("n_head", "n_kv_head", "d_mlp"):
        if getattr(model_cfg, key) % tc.tp:
            problems.append(f"model.{key}={getattr(model_cfg, key)} is not divisible by train.tp={tc.tp}")
    if model_cfg.n_layer < tc.pp:
        problems.append(f"train.pp={tc.pp} stages need at least as many blocks (model.n_layer={model_cfg.n_layer})")
    if tc.pp > 1 and model_cfg.attention != "causal":
        problems.append("train.pp > 1 pipelines causal models only (model.attention=prefix passes prefix_len)")
    if problems:
        raise StageError("; ".join(problems))


def parallelize(model: nn.Module, tc, blocks) -> nn.Module:
    """The model cut to this process's pipeline stage, its blocks split over the tensor-parallel
    group (nothing changes without a mesh)."""
    if _MESH is None:
        return model
    if tc.pp > 1:
        if not all(hasattr(model, a) for a in ("embed", "lm_head", "norm", "cfg")):
            raise StageError(f"train.pp > 1 pipelines the plain Transformer (pretraining); "
                             f"{type(model).__name__} is not one")
        check_model(model.cfg, tc)
        model = split_stage(model, _MESH["pp"].get_local_rank(), tc.pp)
        blocks = model.blocks
    elif hasattr(model, "cfg"):
        check_model(model.cfg, tc)
    if tc.tp > 1:
        apply_tensor_parallel(blocks, _MESH["tp"])
    return model


def pipelined(model: nn.Module, tc, device: torch.device) -> nn.Module:
    return Pipelined(model, tc, device) if _MESH is not None and tc.pp > 1 else model


def apply_tensor_parallel(blocks, tp_mesh) -> None:
    """Megatron's split of every block over ``tp_mesh``: column-parallel into the heads and MLP
    channels, row-parallel out of them (outputs all-reduced back to whole activations)."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    tp = tp_mesh.size()
    plan = {"attn.q_proj": ColwiseParallel(), "attn.k_proj": ColwiseParallel(), "attn.v_proj": ColwiseParallel(),
            "attn.o_proj": RowwiseParallel(),
            "mlp.gate_proj": ColwiseParallel(), "mlp.up_proj": ColwiseParallel(), "mlp.down_proj": RowwiseParallel()}
    for block in blocks:
        parallelize_module(block, tp_mesh, plan)
        # the attention reshapes its projections by its config: give it its shard's heads
        # (d_model shrinks with them, so head_dim = d_model / n_head stays the same)
        c = block.attn.cfg
        block.attn.cfg = dataclasses.replace(c, n_head=c.n_head // tp, n_kv_head=c.n_kv_head // tp,
                                             d_model=c.d_model // tp)


def _is_dtensor(t) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def split_by_dtensor(params) -> list[list]:
    """Parameters grouped by kind: plain tensors, then DTensors of each device mesh (FSDP + TP
    puts the blocks' on the (dp, tp) mesh, the rest on dp alone); a foreach/fused kernel call,
    or a norm, takes one kind at a time."""
    groups: list[tuple[object, list]] = []
    for p in params:
        mesh = p.device_mesh if _is_dtensor(p) else None
        for key, members in groups:
            if key == mesh:
                members.append(p)
                break
        else:
            groups.append((mesh, [p]))
    return [members for _, members in sorted(groups, key=lambda g: g[0] is not None)]


def clip_grad_norm_(model: nn.Module, max_norm: float) -> torch.Tensor:
    """The global gradient norm over every process's part of the model, and clipping to it:
    sharded (DTensor) gradients reduce over their mesh, pipeline stages sum their squares, a
    tied embedding counts once."""
    params = [p for p in {id(p): p for p in model.parameters()}.values() if p.grad is not None]
    skip = {id(p) for p in getattr(model, "counted_elsewhere", ())}
    squares = torch.zeros((), dtype=torch.float64, device=params[0].device if params else "cpu")
    for group in split_by_dtensor([p for p in params if id(p) not in skip]):
        norm = torch.nn.utils.get_total_norm([p.grad for p in group], 2.0)
        norm = norm.full_tensor() if _is_dtensor(norm) else norm
        squares = squares + norm.double() ** 2
    if _MESH is not None and _MESH["pp"].size() > 1:
        dist.all_reduce(squares, group=_MESH["pp"].get_group())
    total = squares.sqrt().float()
    for group in split_by_dtensor(params):
        torch.nn.utils.clip_grads_with_norm_(group, max_norm, total)
    return total


# -- pipeline parallelism --------------------------------------------------------------------

def stage_blocks(n_layer: int, stages: int, index: int) -> range:
    """The blocks of stage ``index``: consecutive, as even as the count allows."""
    bounds = [i * n_layer // stages for i in range(stages + 1)]
    return range(bounds[index], bounds[index + 1])


def _stage_forward(self, x):
    """A pipeline stage of the Transformer: embed (first stage), its blocks, norm and head (last)."""
    import kernels

    kernels.set_backend(self.cfg.kernels)
    T = x.shape[1]
    if self.stage_first:
        x = self.embed(x)
        if self.cfg.pos_emb != "rope":
            x = x + self.pos_table[:T].to(x.dtype)
    rotary = (self.rope_cos[:T], self.rope_sin[:T]) if self.cfg.pos_emb == "rope" else None
    for block in self.blocks:
        x = block(x, rotary, None)
    if not self.stage_last:
        return x
    return self.lm_head(self.norm(x))


def split_stage(model: nn.Module, index: int, stages: int) -> nn.Module:
    """Keep this stage's part of ``model`` in place: its blocks under their original names
    (``blocks.5`` stays ``blocks.5``, so checkpoints of any layout are one full state dict),
    the embedding on the first stage, the final norm and head on the last (with the embedding
    module too when they share their matrix)."""
    mine = stage_blocks(len(model.blocks), stages, index)
    kept = nn.ModuleList()
    for i in mine:
        kept.add_module(str(i), model.blocks[i])
    model.blocks = kept
    first, last = index == 0, index == stages - 1
    tied = model.cfg.tie_embeddings
    model.stage_first, model.stage_last = first, last
    # a tied head keeps its embedding module on the last stage (unused there): the optimizer
    # must see the matrix as an embedding, undecayed, on both stages
    if not first and not (tied and last):
        model.embed = None
    if not last:
        model.lm_head = None
        model.norm = None
    model.forward = types.MethodType(_stage_forward, model)
    model.pipeline_tied = tied and stages > 1 and (first or last)
    # the tied matrix is one parameter in two places: its norm is counted on the first stage
    model.counted_elsewhere = [model.lm_head.weight] if tied and last and not first else []
    return model


def lm_loss_of_logits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy; targets of -100 are not scored (as the model's own loss)."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)


class Pipelined(nn.Module):
    """This process's pipeline stage, trained through a torch.distributed.pipelining schedule;
    called as the model is (``model(x, y) -> (None, loss)``) it runs a forward-only pass over
    the stages, so validation code works unchanged."""

    def __init__(self, stage_module: nn.Module, tc, device: torch.device):
        super().__init__()
        from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

        pp = _MESH["pp"]
        self.module, self.device, self.tc = stage_module, device, tc
        self.index, self.stages, self.group = pp.get_local_rank(), pp.size(), pp.get_group()
        self.first, self.last = self.index == 0, self.index == self.stages - 1
        self.stage = PipelineStage(stage_module, self.index, self.stages, device, group=self.group)
        schedule = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}[tc.pp_schedule]
        self.schedule = schedule(self.stage, n_microbatches=tc.grad_accum, loss_fn=lm_loss_of_logits)
        inner = getattr(stage_module, "module", stage_module)  # under DDP
        self.counted_elsewhere = inner.counted_elsewhere
        self._tied = inner.lm_head.weight if inner.pipeline_tied and self.last else (
            inner.embed.weight if inner.pipeline_tied else None)

    def _global(self, index: int) -> int:
        return dist.get_global_rank(self.group, index)

    def _from_last(self, value: torch.Tensor) -> torch.Tensor:
        dist.broadcast(value, src=self._global(self.stages - 1), group=self.group)
        return value

    def train_step(self, micro_batches, prec) -> torch.Tensor:
        """One step's forward and backward over every micro-batch: the mean loss, on every stage."""
        from pipeline.core.train.loop import to_device

        xs, ys = zip(*[to_device(b, self.device) for b in micro_batches])
        x, y = torch.cat(xs), torch.cat(ys)
        losses: list[torch.Tensor] = []
        with prec.autocast():
            if self.first:
                self.schedule.step(x, target=y if self.last else None, losses=losses)
            elif self.last:
                self.schedule.step(target=y, losses=losses)
            else:
                self.schedule.step()
        if self._tied is not None and self._tied.grad is not None:
            dist.all_reduce(self._tied.grad, group=_TIED)  # embedding's + head's gradient
        loss = torch.stack(losses).mean().detach() if self.last else torch.zeros((), device=self.device)
        return self._from_last(loss.float())

    def optimizer_step(self, opt, prec, micro_batches, tc):
        """loop.optimizer_step for a pipeline stage: -> (mean loss, grad norm, extras)."""
        loss = self.train_step(micro_batches, prec)
        grad_norm = clip_grad_norm_(self, tc.grad_clip) if tc.grad_clip > 0 else None
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss, grad_norm, {}

    def _p2p(self, op, tensor: torch.Tensor, peer: int) -> None:
        op(tensor, self._global(peer), group=self.group)

    @torch.no_grad()
    def forward(self, idx: torch.Tensor, targets: torch.Tensor):
        """Forward only, stage to stage (validation); every stage returns the loss."""
        model = getattr(self.module, "module", self.module)
        if self.first:
            h = idx
        else:
            h = torch.empty((*idx.shape, model.cfg.d_model), device=self.device)
            self._p2p(dist.recv, h, self.index - 1)
        out = model(h)
        if not self.last:
            self._p2p(dist.send, out.float().contiguous(), self.index + 1)
            loss = torch.zeros((), device=self.device)
        else:
            loss = lm_loss_of_logits(out, targets)
        return None, self._from_last(loss.float())


# -- full state of a pipelined model (checkpoints, the published weights) -------------------

def _every_rank_full():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # not cpu_offload: with it only global rank 0 gets a state, and every stage needs its own
    return StateDictOptions(full_state_dict=True)


def _on_cpu(state):
    if isinstance(state, torch.Tensor):
        return state.detach().cpu()
    if isinstance(state, dict):
        return {k: _on_cpu(v) for k, v in state.items()}
    if isinstance(state, list):
        return [_on_cpu(v) for v in state]
    return state


def _to_pipeline_first(obj, stage: Pipelined):
    """Every stage's object, gathered on the first stage of the pipeline (None elsewhere)."""
    gathered = [None] * stage.stages if stage.first else None
    dist.gather_object(obj, gathered, dst=stage._global(0), group=stage.group)
    return gathered


def full_model_state(model: Pipelined) -> dict:
    """The whole model's weights, by the unsplit model's names, on the pipeline's first stage
    (rank 0 is one); the other stages return their own part."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    mine = _on_cpu(get_model_state_dict(model.module, options=_every_rank_full()))
    parts = _to_pipeline_first(mine, model)
    if parts is None:
        return mine
    full = {}
    for part in parts:
        full.update(part)
    return full


def full_optimizer_state(model: Pipelined, optimizer) -> dict:
    """The optimizer's full state over every stage, keyed by parameter names as in one process."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    mine = _on_cpu(get_optimizer_state_dict(model.module, optimizer, options=_every_rank_full()))
    parts = _to_pipeline_first(mine, model)
    if parts is None:
        return mine
    merged = {"state": {}, "param_groups": [dict(g, params=[]) for g in mine["param_groups"]]}
    for part in parts:
        merged["state"].update(part["state"])
        for group, theirs in zip(merged["param_groups"], part["param_groups"]):
            group["params"] += [p for p in theirs["params"] if p not in group["params"]]
    return merged


def load_full_state(model: Pipelined, optimizer, weights: dict, optim_state: dict) -> None:
    """Each stage takes its part of a full checkpoint."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         set_model_state_dict, set_optimizer_state_dict)

    full = StateDictOptions(full_state_dict=True)
    names = set(get_model_state_dict(model.module))
    set_model_state_dict(model.module, {k: v for k, v in weights.items() if k in names}, options=full)
    ours = {"state": {k: v for k, v in optim_state["state"].items() if k in names},
            "param_groups": [dict(g, params=[p for p in g["params"] if p in names]) for g in optim_state["param_groups"]]}
    set_optimizer_state_dict(model.module, optimizer, ours, options=full)


def is_pipelined(model) -> bool:
    return isinstance(model, Pipelined)


@contextlib.contextmanager
def active(tc, device):
    """The mesh for the duration of a training session."""
    setup(tc, device)
    try:
        yield
    finally:
        teardown()
