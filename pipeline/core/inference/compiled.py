"""The decode step through ``torch.compile`` (EngineConfig.compile; CPU, the kernels' PyTorch
references).

On the CPU a decode step of a small model is some 40 tiny ops per layer, and dispatching
them costs more than their arithmetic (profiled: 43 matmuls, 6 attentions and 13 norms are
~1.1 ms of a ~2.2 ms batch-16 step of cpu_2m; the rest is per-op overhead). Inductor fuses
the elementwise work between the matmuls and runs the step as one call.

What is compiled is a pure function of the step's inputs: the pool and the view are only
read inside it, and this step's keys and values come out and are written afterwards by
DecodeView.append (an in-place write into the pool inside the graph would make the compiled
code copy the whole pool every step). Attention therefore sees the cached positions (the
view, under a mask) and the step's own token side by side: one softmax over both, the same
sum SDPA takes, in another order; the greedy tokens are compared with Hugging Face's in
benchmarks/generate.py and with the eager engine's in tests/inference/test_compiled.py.

Where compiling fails (no C++ compiler, an unsupported op) the engine warns once and goes
on with the eager step.
"""
from __future__ import annotations

import logging

import torch

import kernels
from pipeline.core.inference.decode_view import DecodeView
from pipeline.core.inference.forward import Batch, runs_references
from pipeline.core.inference.kv_cache import PagedKVCache

log = logging.getLogger("lmdag.inference")


def decode_layers(model, tokens, positions, view_k, view_v, mask):
    """Logits (N, vocab) and this step's keys and values (n_layer, N, n_kv_head, head_dim) for
    N decoding tokens; view_k/v (n_layer, N, n_kv_head, room, head_dim) hold the cached ones,
    ``mask`` (N, 1, 1, L) which of the first L positions each row sees."""
    N, L = tokens.shape[0], mask.shape[-1]
    x = model.embed(tokens)
    if model.cfg.pos_emb == "rope":
        cos, sin = kernels.reference.rotary_full_tables(model.rope_cos[positions], model.rope_sin[positions])
        cos, sin = cos[:, None], sin[:, None]
    else:
        x = x + model.pos_table[positions].to(x.dtype)
    keys, values = [], []
    for i, block in enumerate(model.blocks):
        attn = block.attn
        hd = attn.cfg.head_dim
        h = block.attn_norm(x)
        q, k, v = attn.q_proj(h).view(N, -1, hd), attn.k_proj(h).view(N, -1, hd), attn.v_proj(h).view(N, -1, hd)
        if attn.cfg.qk_norm:
            q, k = attn.q_norm(q), attn.k_norm(k)
        if model.cfg.pos_emb == "rope":
            q, k = kernels.reference.rotate(q, cos, sin), kernels.reference.rotate(k, cos, sin)
        keys.append(k)
        values.append(v)
        qg = q.reshape(N, k.shape[1], -1, hd)  # (N, Hkv, group, hd): a group's query heads share K/V
        scale = hd ** -0.5
        cached = (qg @ view_k[i, :, :, :L].transpose(-1, -2)) * scale + mask  # (N, Hkv, group, L)
        own = (qg * k[:, :, None]).sum(-1, keepdim=True) * scale  # this token's key
        p = torch.cat((cached, own), -1).softmax(-1)
        out = p[..., :L] @ view_v[i, :, :, :L] + p[..., L:] * v[:, :, None]
        x = x + attn.o_proj(out.reshape(N, -1).to(x.dtype))
        x = x + block.mlp(block.mlp_norm(x))
    return model.lm_head(model.norm(x)).float(), torch.stack(keys), torch.stack(values)


class CompiledDecode:
    """All-decode steps of one engine through the compiled ``decode_layers``."""

    def __init__(self, model):
        if not runs_references(model.embed.weight.device) or model.cfg.kernels == "triton":
            raise ValueError("compile=true compiles the PyTorch decode path (the CPU's); with the Triton kernels "
                             "(a CUDA device, kernels=triton) the decode attention is a fused kernel already")
        if model.cfg.prefix_tokens:
            raise ValueError("compile=true does not support prefix tuning's learned keys and values")
        self.model = model
        # dynamic: one graph for every batch size and context length, not one per step's shape.
        # size_asserts: inductor's check of every input's size and stride on each call, ~60 a
        # step here; the view's and the pool's layouts are fixed by this file.
        self.fn = torch.compile(decode_layers, dynamic=True, options={"size_asserts": False})
        self.view = DecodeView()
        self.failed = False

    def applies(self, batch: Batch) -> bool:
        if batch.all_decode and not self.failed:
            return True
        self.view.reset()  # the eager step adds tokens the view does not see
        return False

    @torch.inference_mode()
    def __call__(self, cache: PagedKVCache, batch: Batch) -> torch.Tensor | None:
        """Logits, with the step's keys and values stored; None if compiling failed (the eager
        step runs instead, as it will from now on)."""
        kernels.set_backend(self.model.cfg.kernels)
        mask = self.view.prepare(cache, batch)
        try:
            logits, k, v = self.fn(self.model, batch.tokens, batch.positions, self.view.k, self.view.v, mask)
        except Exception as err:  # inductor's failures come as many types; nothing was written yet
            log.warning("torch.compile of the decode step failed (%s: %s); decoding eagerly",
                        type(err).__name__, str(err).strip().splitlines()[0] if str(err).strip() else "")
            self.failed = True
            self.view.reset()
            return None
        self.view.append(cache, batch.slots, k, v)
        return logits
