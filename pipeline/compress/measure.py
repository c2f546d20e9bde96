"""What a variant costs and how good it is: size, bits per weight, parameters and nonzeros,
held-out perplexity and bits-per-byte (pretraining's final-evaluation protocol), CPU latency."""
from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

import torch
import torch.nn as nn

from pipeline.model.quantized import LowRankLinear, QuantLinear, dense_weight


def _stored_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def counts(model) -> dict:
    """Parameters (a shared or tied tensor once; a quantized weight as the weights it encodes;
    low-rank factors as their own sizes), how many of them are not 0, and bits per weight of
    the block Linears as stored (codes + scales + zero points)."""
    params = nonzeros = linear_weights = linear_bytes = 0
    seen = set()
    for module in model.modules():  # modules() visits a shared block once
        if isinstance(module, (QuantLinear, LowRankLinear)):
            stored = [dense_weight(module)] if isinstance(module, QuantLinear) else list(module.parameters())
            params += sum(t.numel() for t in stored)
            nonzeros += sum(int(torch.count_nonzero(t)) for t in stored)
            linear_weights += module.in_features * module.out_features
            linear_bytes += _stored_bytes(module)
            seen.update(id(p) for p in module.parameters())
            continue
        for p in module.parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            params += p.numel()
            nonzeros += int(torch.count_nonzero(p))
        if isinstance(module, nn.Linear) and module is not getattr(model, "lm_head", None):
            linear_weights += module.weight.numel()
            linear_bytes += module.weight.numel() * module.weight.element_size()
    return {"params": params, "nonzeros": nonzeros, "sparsity": round(1 - nonzeros / max(params, 1), 6),
            "linear_bits_per_weight": round(8 * linear_bytes / max(linear_weights, 1), 4)}


def size_on_disk(model_dir: Path) -> int:
    return (Path(model_dir) / "model.safetensors").stat().st_size


def heldout(model, data, windows: int, batch_size: int) -> dict:
    """Next-token loss on the validation split, as pretraining's final evaluation scores it."""
    from pipeline.core.train import evaluation
    from pipeline.core.train.batches import eval_starts

    seq_len = model.cfg.max_seq_len
    starts = eval_starts(len(data.val), seq_len, windows or None)
    nats, n = evaluation.loss_sums(model, data.val, starts, seq_len, batch_size, contextlib.nullcontext, "cpu")
    per_token = evaluation.token_bytes(data.dir / "tokenizer.json", model.cfg.vocab_size)
    n_bytes = evaluation.target_bytes(data.val, starts, seq_len, per_token)
    loss = nats / max(n, 1)
    return {"val_loss": loss, "val_perplexity": math.exp(loss), "val_bits_per_byte": evaluation.bits_per_byte(nats, n_bytes),
            "val_tokens_scored": n, "val_bytes_scored": n_bytes}


@torch.no_grad()
def latency_ms_per_token(model, prompt: torch.Tensor, new_tokens: int) -> float:
    """Greedy decoding of ``new_tokens`` after ``prompt`` (1, T), wall ms per token, after one
    warm-up token. The model has no KV cache (each token re-runs its context, as nanoGPT)."""
    model.generate(prompt, 1, temperature=0)
    start = time.perf_counter()
    model.generate(prompt, new_tokens, temperature=0)
    return round(1000 * (time.perf_counter() - start) / max(new_tokens, 1), 3)


def measure(model, model_dir: Path, data, cfg) -> dict:
    """Every figure of one model directory (the base or a variant)."""
    stats = {"size_bytes": size_on_disk(model_dir), **counts(model)}
    stats["bits_per_weight"] = round(8 * stats["size_bytes"] / max(stats["params"], 1), 4)
    if data is not None:
        stats.update(heldout(model, data, cfg.eval_windows, cfg.eval_batch_size))
        T = min(cfg.latency_prompt, model.cfg.max_seq_len - cfg.latency_tokens)
        prompt = torch.from_numpy(data.val[:T].astype("int64"))[None, :]
        stats["latency_ms_per_token"] = latency_ms_per_token(model, prompt, cfg.latency_tokens)
    return stats
