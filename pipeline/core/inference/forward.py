"""One engine step through the model: every scheduled token of every sequence in one pass.

The tokens of all sequences are laid side by side in one (N, d_model) activation, as vLLM
lays out a mixed batch: the model's own modules (embedding, norms,
q/k/v/o projections, MLP, head) run once over all N tokens, whatever mix of new prompts and
decoding sequences the step holds. Only attention looks at which sequence a token belongs
to: single-token segments (decoding) go through ``kernels.paged_attention`` on the block
pool; a prompt segment attends causally to itself, plus any cached shared prefix.

The modules are called, never their weights read, so quantized Linear replacements and
unmerged LoRA wrappers (peft) run as they are; the head count of a layer is read off its
projection's output width, so tensor-parallel shards (fewer heads per process) work too.

On the CPU (the kernels' PyTorch references) a decode step of a small model is hundreds of
tiny ops whose count, not their arithmetic, is the cost; what every layer shares is built
once per step instead of once per layer: the paged attention's gather indices and length
mask (``kernels.reference.paged_decode_plan``) and the full-width RoPE tables. The results
are the same bit for bit (tests/inference compare with Hugging Face ``generate``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

import kernels
from pipeline.core.inference.kv_cache import PagedKVCache


@dataclass
class Segment:
    """Tokens of one sequence in this step: rows [row, row + length) of the batch."""

    row: int
    length: int
    start: int  # position of the first of them in the sequence (= tokens already cached)
    blocks: list[int]
    serial: int = -1  # of the sequence's block table (kv_cache.BlockTable.serial)


@dataclass
class Batch:
    tokens: torch.Tensor  # (N,) token ids
    positions: torch.Tensor  # (N,)
    slots: torch.Tensor  # (N,) cache slot of each token
    segments: list[Segment] = field(default_factory=list)

    @classmethod
    def build(cls, segments: list[tuple[list[int], int, list[int], list[int], int]], device) -> "Batch":
        """segments: (tokens, start position, block table, slots, table serial) per sequence."""
        tokens, positions, slots, segs, row = [], [], [], [], 0
        for toks, start, blocks, seg_slots, serial in segments:
            tokens += toks
            positions += range(start, start + len(toks))
            slots += seg_slots
            segs.append(Segment(row, len(toks), start, blocks, serial))
            row += len(toks)
        as_long = lambda x: torch.tensor(x, dtype=torch.long, device=device)
        batch = cls(as_long(tokens), as_long(positions), as_long(slots), segs)
        batch._plan(device)
        return batch

    def _plan(self, device) -> None:
        """Which rows decode through the paged kernel, and their tables and context lengths."""
        decode = [s for s in self.segments if s.length == 1]
        self.prefills = [s for s in self.segments if s.length > 1]
        self.decode_rows = torch.tensor([s.row for s in decode], dtype=torch.long, device=device)
        width = max((len(s.blocks) for s in decode), default=1)
        tables = [s.blocks + [0] * (width - len(s.blocks)) for s in decode]  # 0: padding, never read
        self.decode_tables = torch.tensor(tables, dtype=torch.int32, device=device).reshape(len(decode), width)
        self.decode_lens = torch.tensor([s.start + 1 for s in decode], dtype=torch.int32, device=device)
        self.last_rows = torch.tensor([s.row + s.length - 1 for s in self.segments], dtype=torch.long, device=device)
        self.all_decode = not self.prefills
        self.decode_plan = None  # forward() makes it when the kernels run their PyTorch references


def prefill_attention(q, k, v, start: int, cache: PagedKVCache, layer: int, blocks: list[int]):
    """q, k, v: (T, H, D) of one prompt segment at positions [start, start + T)."""
    T = q.shape[0]
    qh = q.transpose(0, 1)[None]
    if start == 0:  # nothing cached before it: plain causal attention (flash kernel on GPU)
        return kernels.attention(qh, k.transpose(0, 1)[None], v.transpose(0, 1)[None], causal=True)[0].transpose(0, 1)
    keys, values = cache.gather(layer, torch.tensor(blocks, device=q.device), start + T)
    group = q.shape[1] // keys.shape[1]
    keys = keys.transpose(0, 1).repeat_interleave(group, 0)[None]
    values = values.transpose(0, 1).repeat_interleave(group, 0)[None]
    rows = torch.arange(start, start + T, device=q.device)[:, None]
    visible = torch.arange(start + T, device=q.device)[None, :] <= rows
    out = F.scaled_dot_product_attention(qh.float(), keys.float(), values.float(), attn_mask=visible)
    return out[0].transpose(0, 1).to(q.dtype)


def runs_references(device: torch.device) -> bool:
    """Whether ``kernels`` run their PyTorch references here (as kernels.set_backend decides)."""
    backend = kernels.get_backend()
    return backend == "torch" or (backend == "auto" and device.type != "cuda")


class Rotary:
    """RoPE at this step's positions, the same for every layer. With the PyTorch references
    the full-width tables are built once per step, not once per layer (4 ops per tensor a
    layer instead of 9, plus 3 for the tables); on a GPU the Triton kernel gets q and k laid
    out as it expects."""

    def __init__(self, model, positions: torch.Tensor, reference: bool):
        self.cos, self.sin = model.rope_cos[positions], model.rope_sin[positions]  # (N, hd/2)
        self.reference = reference
        if reference:
            cos, sin = kernels.reference.rotary_full_tables(self.cos, self.sin)
            self.cos_full, self.sin_full = cos[:, None], sin[:, None]  # (N, 1, hd): broadcast over heads

    def __call__(self, q, k):
        """q (N, Hq, hd), k (N, Hkv, hd) -> rotated, same shapes."""
        if self.reference:
            return (kernels.reference.rotate(q, self.cos_full, self.sin_full),
                    kernels.reference.rotate(k, self.cos_full, self.sin_full))
        q, k = kernels.apply_rotary(q.transpose(0, 1)[None], k.transpose(0, 1)[None], self.cos, self.sin)
        return q[0].transpose(0, 1), k[0].transpose(0, 1)


def attention(attn, x, rotary: Rotary | None, cache: PagedKVCache, layer: int, batch: Batch, qkv=None):
    """The model's Attention module over a batch (x: (N, d_model)), keys/values through the paged
    cache; ``qkv`` (fused.Fused): its q/k/v projections as one matmul."""
    N = x.shape[0]
    hd = attn.cfg.head_dim
    if qkv is not None and qkv.valid():
        q, k, v = (t.view(N, -1, hd) for t in F.linear(x, qkv.weight).split(qkv.sizes, -1))
    else:
        q = attn.q_proj(x).view(N, -1, hd)
        k = attn.k_proj(x).view(N, -1, hd)
        v = attn.v_proj(x).view(N, -1, hd)
    if attn.cfg.qk_norm:
        q, k = attn.q_norm(q), attn.k_norm(k)
    if rotary is not None:
        q, k = rotary(q, k)
    if attn.cfg.prefix_tokens:  # prefix slots: the model's learned keys and values
        slot = batch.positions < attn.cfg.prefix_tokens
        k[slot] = attn.prefix_k.transpose(0, 1)[batch.positions[slot]].to(k.dtype)
        v[slot] = attn.prefix_v.transpose(0, 1)[batch.positions[slot]].to(v.dtype)
    cache.write(layer, batch.slots, k, v)
    if batch.all_decode:
        out = decode_attention(q, cache, layer, batch)
    else:
        out = q.new_empty(q.shape)
        if len(batch.decode_rows):
            out[batch.decode_rows] = decode_attention(q[batch.decode_rows], cache, layer, batch)
        for s in batch.prefills:
            rows = slice(s.row, s.row + s.length)
            out[rows] = prefill_attention(q[rows], k[rows], v[rows], s.start, cache, layer, s.blocks)
    return attn.o_proj(out.reshape(N, -1))


def decode_attention(q, cache: PagedKVCache, layer: int, batch: Batch):
    """The decoding rows through the paged kernel; with the PyTorch reference, its gather
    indices and length mask come from the step's plan instead of being rebuilt in every layer."""
    if batch.decode_plan is not None:
        return kernels.reference.paged_attention_planned(q, cache.k[layer], cache.v[layer], batch.decode_plan)
    return kernels.paged_attention(q, cache.k[layer], cache.v[layer], batch.decode_tables, batch.decode_lens)


def mlp(block, x, gate_up=None):
    """The block's MLP; ``gate_up`` (fused.Fused): its gate and up projections as one matmul,
    then what transformer.MLP.forward does with them."""
    if gate_up is None or not gate_up.valid():
        return block.mlp(x)
    gate, up = F.linear(x, gate_up.weight).split(gate_up.sizes, -1)
    return block.mlp.down_proj(kernels.swiglu(gate, up))


@torch.inference_mode()
def forward(model, cache: PagedKVCache, batch: Batch, offloader=None, fused=None) -> torch.Tensor:
    """Logits (num_sequences, vocab) at the last scheduled token of each sequence; ``fused``
    (fused.fuse_projections): each block's merged projections."""
    kernels.set_backend(model.cfg.kernels)
    reference = runs_references(batch.tokens.device)
    if reference and len(batch.decode_rows):
        batch.decode_plan = kernels.reference.paged_decode_plan(batch.decode_tables, batch.decode_lens,
                                                                cache.block_size)
    x = model.embed(batch.tokens)  # (N, d_model): every scheduled token side by side
    virtual = batch.positions < model.cfg.virtual_tokens
    if model.cfg.virtual_tokens and bool(virtual.any()):  # they open every sequence (Engine.virtual_ids)
        x[virtual] = model.virtual_inputs(1, x.dtype)[0, batch.positions[virtual]]
    rotary = None
    if model.cfg.pos_emb == "rope":
        rotary = Rotary(model, batch.positions, reference)
    else:
        x = x + model.pos_table[batch.positions].to(x.dtype)
    for i, block in enumerate(model.blocks):
        if offloader is not None:
            offloader.before(i)
        qkv, gate_up = fused[i] if fused else (None, None)
        x = x + attention(block.attn, block.attn_norm(x), rotary, cache, i, batch, qkv)
        x = x + mlp(block, block.mlp_norm(x), gate_up)
        if offloader is not None:
            offloader.after(i)
    h = model.norm(x if batch.all_decode else x[batch.last_rows])  # all decoding: every row is a last one
    return model.lm_head(h).float()
