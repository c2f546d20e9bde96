"""Plain-PyTorch references for every kernel, with the same signatures as the public API.

These are what the model runs with ``kernels=torch`` (and on CPU with ``auto``), and what the
Triton kernels are tested against. They favour clarity, except ``linear_cross_entropy``, which
is chunked so that a CPU run never holds the full (N, V) logits either.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _wide(x: torch.Tensor) -> torch.Tensor:
    """Compute in fp32 at least (fp64 stays fp64, so the references can be gradchecked)."""
    if x.dtype in _WIDE:  # already wide: skip the dtype promotion and .to (a decode step makes ~100 of these)
        return x
    return x.to(torch.promote_types(x.dtype, torch.float32))


_WIDE = (torch.float32, torch.float64)


def _prefix_tensor(prefix_len, batch: int, device) -> torch.Tensor | None:
    """Normalise ``prefix_len`` (None, int or (B,) tensor) to a (B,) long tensor, or None."""
    if prefix_len is None:
        return None
    if isinstance(prefix_len, torch.Tensor):
        p = prefix_len.to(device=device, dtype=torch.long).reshape(-1)
        return p.expand(batch) if p.numel() == 1 else p
    return torch.full((batch,), int(prefix_len), dtype=torch.long, device=device)


def attention_mask(T: int, causal: bool, prefix_len, batch: int, device) -> torch.Tensor | None:
    """Boolean mask (B or 1, 1, T, T), True = may attend; None means attend everywhere."""
    if not causal:
        return None
    i = torch.arange(T, device=device)
    allowed = (i[None, :] <= i[:, None])[None, None]  # (1, 1, T, T)
    p = _prefix_tensor(prefix_len, batch, device)
    if p is not None:
        # Keys inside the prefix are visible to every query inside the prefix (PaLM/GLM-style).
        in_prefix = (i[None, :] < p[:, None])  # (B, T)
        allowed = allowed | (in_prefix[:, None, :, None] & in_prefix[:, None, None, :])
    return allowed


def attention(q, k, v, causal: bool = True, prefix_len=None, scale: float | None = None):
    B, Hq, T, D = q.shape
    Hkv = k.shape[1]
    if Hq % Hkv:
        raise ValueError(f"query heads ({Hq}) must be a multiple of key/value heads ({Hkv})")
    if Hkv != Hq:
        k = k.repeat_interleave(Hq // Hkv, dim=1)
        v = v.repeat_interleave(Hq // Hkv, dim=1)
    # SDPA rather than softmax(QK^T)V by hand: on CPU it picks a fused kernel that never
    # holds the (T, T) scores when the mask is plain causal - this is the CPU training path.
    mask = attention_mask(T, causal, prefix_len, B, q.device) if prefix_len is not None else None
    out = F.scaled_dot_product_attention(_wide(q), _wide(k), _wide(v), attn_mask=mask,
                                         is_causal=causal and mask is None, scale=scale)
    return out.to(q.dtype)


def rms_norm(x, weight, eps: float = 1e-6):
    # x * rsqrt(mean(x^2) + eps) * weight in one op: bit-identical to writing it out (forward and
    # gradients, fp32/bf16/fp64), at a third of the ops.
    return F.rms_norm(_wide(x), (x.shape[-1],), _wide(weight), eps).to(x.dtype)


def rotary_cos_sin(T: int, D: int, base: float = 10000.0, device=None, dtype=torch.float32):
    """cos/sin tables (T, D//2) for the Hugging Face Llama rotary convention."""
    inv_freq = 1.0 / (base ** (torch.arange(0, D, 2, device=device, dtype=torch.float32) / D))
    angles = torch.outer(torch.arange(T, device=device, dtype=torch.float32), inv_freq)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotary_full_tables(cos, sin) -> tuple[torch.Tensor, torch.Tensor]:
    """The (T, D//2) cos/sin tables widened to (T, D) for ``rotate``: [cos, cos] and [-sin, sin]."""
    c, s = _wide(cos), _wide(sin)
    return torch.cat((c, c), -1), torch.cat((-s, s), -1)


def rotate(x, cos_full, sin_full):
    """x * [cos, cos] + [x2, x1] * [-sin, sin] = cat(x1*cos - x2*sin, x2*cos + x1*sin): the same
    products and sums, bit for bit (values and gradients), in 4 ops instead of 9 (a decode step's
    rotary is all per-op overhead)."""
    xf = _wide(x)
    return (xf * cos_full + xf.roll(x.shape[-1] // 2, -1) * sin_full).to(x.dtype)


def apply_rotary(q, k, cos, sin):
    """HF Llama ``rotate_half``: out = cat(x1*cos - x2*sin, x2*cos + x1*sin)."""
    cos_full, sin_full = rotary_full_tables(cos, sin)  # shared by q and k
    return rotate(q, cos_full, sin_full), rotate(k, cos_full, sin_full)


def swiglu(gate, up):
    return (F.silu(_wide(gate)) * _wide(up)).to(gate.dtype)


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """lm-head matmul + cross-entropy over row chunks, gradients computed during the forward.

    Like Liger-Kernel's fused linear CE: for each chunk of rows we build its logits, turn them
    into d(loss)/d(logits) in place, and immediately accumulate grad_hidden and grad_weight, so
    peak extra memory is one (chunk, V) block instead of (N, V) logits plus their gradient.
    The backward only rescales the stored gradients by the incoming grad_output.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, ignore_index, label_smoothing, chunk_size, with_grad):
        N, H = hidden.shape
        V = weight.shape[0]
        eps = label_smoothing
        valid = targets != ignore_index
        denom = valid.sum().clamp(min=1)
        want_gh = with_grad and ctx.needs_input_grad[0]
        want_gw = with_grad and ctx.needs_input_grad[1]
        grad_hidden = torch.empty_like(hidden) if want_gh else None
        # fp32 accumulator: summing many fp16 chunk products would lose the small ones.
        acc = torch.promote_types(hidden.dtype, torch.float32)
        grad_weight = torch.zeros(V, H, dtype=acc, device=hidden.device) if want_gw else None
        total = torch.zeros((), dtype=acc, device=hidden.device)
        for start in range(0, N, chunk_size):
            rows = slice(start, start + chunk_size)
            h, t, ok = hidden[rows], targets[rows], valid[rows]
            logits = (h @ weight.t()).to(acc)  # (chunk, V): the only large temporary
            safe_t = torch.where(ok, t, torch.zeros_like(t))
            target_logit = logits.gather(1, safe_t[:, None]).squeeze(1)
            mean_logit = logits.mean(-1) if eps > 0 else None
            # log-sum-exp by hand so that exp happens in place (logsumexp would allocate
            # another (chunk, V) block); p is then reused as the gradient.
            m = logits.amax(-1, keepdim=True)
            p = logits.sub_(m).exp_()
            z = p.sum(-1, keepdim=True)
            lse = (m + z.log()).squeeze(1)
            loss_rows = (1 - eps) * (lse - target_logit)
            if eps > 0:  # smoothing: eps * mean over the vocab of -log p
                loss_rows = loss_rows + eps * (lse - mean_logit)
            total += torch.where(ok, loss_rows, torch.zeros_like(loss_rows)).sum()
            if not (want_gh or want_gw):
                del logits, p
                continue
            # d loss / d logits = (softmax - (1-eps) onehot - eps/V) / n_valid, and 0 on ignored rows
            g = p.div_(z)
            if eps > 0:
                g.sub_(eps / V)
            g.scatter_add_(1, safe_t[:, None], torch.full_like(lse[:, None], eps - 1))
            g.mul_((ok.to(acc) / denom)[:, None])
            if want_gh:
                grad_hidden[rows] = g.to(hidden.dtype) @ weight
            if want_gw:
                grad_weight.addmm_(g.t(), h.to(acc))
            del logits, p, g  # free this chunk before the next one is allocated
        ctx.weight_dtype = weight.dtype
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.consumed = False
        return total / denom  # fp32 (or wider) whatever the input dtype

    @staticmethod
    def backward(ctx, grad_out):
        grad_hidden, grad_weight = scale_stored_grads(ctx, grad_out)
        if grad_weight is not None:
            grad_weight = grad_weight.to(ctx.weight_dtype)
        return grad_hidden, grad_weight, None, None, None, None, None


def scale_stored_grads(ctx, grad_out):
    """Scale gradients made during the forward by grad_out, in place: a copy would double the
    (V, H) weight gradient at the very moment memory peaks. They can be used only once."""
    if ctx.consumed:
        raise RuntimeError("linear_cross_entropy computes its gradients during the forward and hands "
                           "them out once: backward through it twice (retain_graph) is not supported")
    ctx.consumed = True
    grads = ctx.saved_tensors
    for g in grads:
        if g is not None:
            g.mul_(grad_out.to(g.dtype))
    return grads


def linear_cross_entropy(hidden, weight, targets, ignore_index: int = -100,
                         label_smoothing: float = 0.0, chunk_size: int = 4096):
    # Inside autograd.Function.forward grad mode is always off, so decide here whether the
    # per-chunk gradients are worth computing (they are not under torch.no_grad(), e.g. eval).
    with_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    return ChunkedLinearCrossEntropy.apply(hidden, weight, targets, int(ignore_index),
                                           float(label_smoothing), int(chunk_size), with_grad)


def naive_linear_cross_entropy(hidden, weight, targets, ignore_index: int = -100,
                               label_smoothing: float = 0.0):
    """The unfused baseline: full logits, then ``F.cross_entropy`` (tests and benchmarks)."""
    logits = hidden @ weight.t()
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return F.cross_entropy(logits, targets, ignore_index=ignore_index, label_smoothing=label_smoothing)


def paged_attention(q, k_cache, v_cache, block_tables, context_lens, scale: float | None = None):
    """Attention of one query row per sequence over a paged KV cache (decode).

    q: (N, Hq, D); k_cache, v_cache: (num_blocks, block_size, Hkv, D); block_tables: (N, M) int,
    row i the cache blocks of sequence i in order (unused entries any valid block id);
    context_lens: (N,) int, 1 <= context_lens[i] <= M * block_size. Row i attends to the first
    context_lens[i] cached positions of its sequence. Returns (N, Hq, D).
    """
    plan = paged_decode_plan(block_tables, context_lens, k_cache.shape[1])
    return paged_attention_planned(q, k_cache, v_cache, plan, scale)


def paged_decode_plan(block_tables, context_lens, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What every layer of one decode step shares: the flat block ids to gather, (N * M,) long,
    and which gathered positions each row sees, (N, 1, 1, M * block_size) bool. An engine
    builds it once per step instead of once per layer."""
    L = block_tables.shape[1] * block_size
    visible = torch.arange(L, device=block_tables.device)[None, :] < context_lens.to(block_tables.device)[:, None]
    return block_tables.long().reshape(-1), visible[:, None, None, :]


def paged_attention_planned(q, k_cache, v_cache, plan, scale: float | None = None):
    """``paged_attention`` with its ``paged_decode_plan`` made by the caller."""
    N, Hq, D = q.shape
    _, block_size, Hkv, _ = k_cache.shape
    if Hq % Hkv:
        raise ValueError(f"query heads ({Hq}) must be a multiple of key/value heads ({Hkv})")
    blocks, visible = plan
    L = visible.shape[-1]
    # One gather of every sequence's blocks into a padded (N, L) tensor, one SDPA under a length
    # mask. index_select, not k_cache[blocks]: on CPU advanced indexing is ~10x slower for this copy.
    k = k_cache.index_select(0, blocks).view(N, L, Hkv, D).transpose(1, 2)  # (N, Hkv, L, D)
    v = v_cache.index_select(0, blocks).view(N, L, Hkv, D).transpose(1, 2)
    # The query heads of a group ride on SDPA's query-length axis: no repeat of K/V for GQA.
    qg = q.reshape(N, Hkv, Hq // Hkv, D)
    out = F.scaled_dot_product_attention(_wide(qg), _wide(k), _wide(v), attn_mask=visible.to(q.device),
                                         scale=scale)
    return out.reshape(N, Hq, D).to(q.dtype)
