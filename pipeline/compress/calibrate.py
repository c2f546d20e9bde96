"""Calibration: token windows from the tokenize directory, and a block-by-block pass that
shows each block's Linear layers the inputs they see in the model as compressed so far.

The pass is sequential, as GPTQ's reference code and llm-compressor's sequential pipeline
run it: the calibration batch's hidden states enter block 0; forward hooks record what every
Linear of the block receives (Hessian, per-channel statistics, a sample of rows); the
method compresses the block; the compressed block's outputs feed block 1. So a later
block's statistics include the error of the earlier ones, which the method then corrects.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from pipeline.compress.obs import Hessian
from pipeline.core.errors import StageError

# The Linear layers of a block, by their name inside it.
BLOCK_LINEARS = ("attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.o_proj",
                 "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
SAMPLE_ROWS = 4096  # input rows kept per layer for searches that score outputs (AWQ)


def block_linears(model) -> dict[str, nn.Module]:
    """{"blocks.<i>.attn.q_proj": module, ...} for every block, in order."""
    return {f"blocks.{i}.{n}": block.get_submodule(n) for i, block in enumerate(model.blocks) for n in BLOCK_LINEARS}


def calibration_ids(tokens_dir: Path, samples: int, seq_len: int, seed: int) -> torch.Tensor:
    """``samples`` distinct windows of ``seq_len`` train tokens (seeded), (n, seq_len) int64."""
    from pipeline.core.tokens import TokenData

    data = TokenData(tokens_dir)
    n_windows = (len(data.train) - 1) // seq_len
    if samples < 1 or n_windows < 1:
        raise StageError(f"compress: empty calibration set: {tokens_dir}/train.bin has {len(data.train)} tokens "
                         f"({n_windows} windows of {seq_len}) and calibration_samples={samples}; "
                         "give a tokenize directory with train tokens and calibration_samples >= 1")
    if samples > n_windows:
        raise StageError(f"compress.calibration_samples={samples}: {tokens_dir}/train.bin has only {n_windows} "
                         f"windows of {seq_len} tokens; lower it or calibration_seq_len")
    picks = np.sort(np.random.default_rng(seed).choice(n_windows, samples, replace=False))
    rows = np.stack([np.asarray(data.train[p * seq_len:(p + 1) * seq_len], dtype=np.int64) for p in picks])
    return torch.from_numpy(rows)


@dataclass
class LinearStats:
    """What one Linear received over the calibration set."""

    hessian: Hessian
    abs_max: torch.Tensor  # per input channel (SmoothQuant)
    abs_sum: torch.Tensor  # per input channel, / rows = mean |x| (AWQ)
    rows: int = 0
    sample: list = field(default_factory=list)
    sample_every: int = 1

    @classmethod
    def empty(cls, in_features: int, sample_every: int) -> "LinearStats":
        return cls(Hessian(in_features), torch.zeros(in_features), torch.zeros(in_features), sample_every=sample_every)

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float()
        self.hessian.add(x)
        self.abs_max = torch.maximum(self.abs_max, x.abs().amax(0))
        self.abs_sum += x.abs().sum(0)
        self.rows += x.shape[0]
        self.sample.append(x[::self.sample_every])

    @property
    def abs_mean(self) -> torch.Tensor:
        return self.abs_sum / max(self.rows, 1)

    def sample_rows(self) -> torch.Tensor:
        return torch.cat(self.sample)[:SAMPLE_ROWS]


def _embed(model, ids: torch.Tensor):
    x = model.embed(ids)
    if model.cfg.pos_emb == "rope":
        T = ids.shape[1]
        return x, (model.rope_cos[:T], model.rope_sin[:T])
    return x + model.pos_table[:ids.shape[1]].to(x.dtype), None


@torch.no_grad()
def sequential(model, ids: torch.Tensor, compress_block: Callable[[int, nn.Module, dict], None],
               batch_size: int = 16, progress: bool = True, desc: str = "calibrate") -> None:
    """Run ``compress_block(index, block, {name in block: LinearStats})`` block by block."""
    import kernels

    kernels.set_backend(model.cfg.kernels)
    model.eval()
    hidden, rotary = [], None
    for i in range(0, len(ids), batch_size):
        h, rotary = _embed(model, ids[i:i + batch_size])
        hidden.append(h)
    tokens = ids.numel()
    every = max(1, tokens // SAMPLE_ROWS)
    for b, block in enumerate(tqdm(model.blocks, desc=desc, unit="block", disable=None if progress else True)):
        stats = {n: LinearStats.empty(block.get_submodule(n).in_features, every) for n in BLOCK_LINEARS}
        hooks = [block.get_submodule(n).register_forward_pre_hook(lambda _m, args, n=n: stats[n].add(args[0]))
                 for n in BLOCK_LINEARS]
        try:
            for h in hidden:
                block(h, rotary, None)
        finally:
            for hook in hooks:
                hook.remove()
        compress_block(b, block, stats)
        hidden = [block(h, rotary, None) for h in hidden]


def output_error(W: torch.Tensor, W_new: torch.Tensor, H: torch.Tensor) -> float:
    """||X (W - W')^T||^2 / ||X W^T||^2 over the calibration inputs, from H = 2 X^T X / n."""
    D = (W - W_new).float()
    num = torch.einsum("oi,ij,oj->", D, H, D)
    den = torch.einsum("oi,ij,oj->", W.float(), H, W.float())
    return float(num / den.clamp(min=1e-30))


def weight_error(W: torch.Tensor, W_new: torch.Tensor) -> float:
    """||W - W'|| / ||W|| (Frobenius)."""
    return float((W - W_new).float().norm() / W.float().norm().clamp(min=1e-30))
