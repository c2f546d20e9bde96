"""Fused kernels for the model's hot paths, each with a plain-PyTorch reference.

    from kernels import attention, rms_norm, apply_rotary, rotary_cos_sin, swiglu, linear_cross_entropy
    from kernels import paged_attention     # decode attention over a paged KV cache
    kernels.set_backend("auto")   # "auto" | "triton" | "torch"

``auto`` runs the Triton kernels when the tensors live on CUDA and the references otherwise.
``triton`` forces them (on CPU that needs ``TRITON_INTERPRET=1`` set before this package's
Triton modules are first imported — they are imported lazily, on first use, for that reason).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import torch

from . import reference
from .reference import rotary_cos_sin

__all__ = ["set_backend", "get_backend", "attention", "rms_norm", "apply_rotary",
           "rotary_cos_sin", "swiglu", "linear_cross_entropy", "paged_attention"]

_BACKENDS = ("auto", "triton", "torch")
_backend = "auto"


def set_backend(name: str) -> None:
    global _backend
    if name not in _BACKENDS:
        raise ValueError(f"unknown kernels backend {name!r}; expected one of {', '.join(_BACKENDS)}")
    _backend = name


def get_backend() -> str:
    return _backend


# Triton is an optional dependency (the `gpu` extra): CPU-only installs run the references.
_HAVE_TRITON = importlib.util.find_spec("triton") is not None


def _use_triton(t: torch.Tensor) -> bool:
    if _backend == "triton":
        return True
    return _backend == "auto" and t.is_cuda and _HAVE_TRITON


def _triton(module: str, t: torch.Tensor):
    if not _HAVE_TRITON:
        raise RuntimeError("kernels backend 'triton' needs the triton package (pip install 'lmdag[gpu]')")
    import triton

    if not t.is_cuda and not triton.knobs.runtime.interpret:
        raise RuntimeError(f"kernels backend 'triton' got {t.device.type} tensors: Triton runs on CUDA, or on "
                           "the CPU through its interpreter when TRITON_INTERPRET=1 is set before kernels load")
    return importlib.import_module(f"{__name__}.{module}")


def attention(q, k, v, causal: bool = True, prefix_len=None, scale: float | None = None):
    """q: (B, Hq, T, D); k, v: (B, Hkv, T, D), Hq % Hkv == 0. Returns (B, Hq, T, D).

    ``prefix_len`` (int or LongTensor (B,)): tokens [0, prefix_len) see each other
    bidirectionally, the rest is causal (prefix decoder). Ignored when ``causal`` is False.
    """
    if _use_triton(q):
        return _triton("flash_attention", q).attention(q, k, v, causal, prefix_len, scale)
    return reference.attention(q, k, v, causal, prefix_len, scale)


def rms_norm(x, weight, eps: float = 1e-6):
    """x: (..., D), weight: (D,). Computes in fp32, returns x.dtype."""
    if _use_triton(x):
        return _triton("rms_norm", x).rms_norm(x, weight, eps)
    return reference.rms_norm(x, weight, eps)


def apply_rotary(q, k, cos, sin):
    """Hugging Face Llama rotate_half rotary; cos, sin: (T, D//2). Returns (q, k) rotated."""
    if _use_triton(q):
        return _triton("rotary", q).apply_rotary(q, k, cos, sin)
    return reference.apply_rotary(q, k, cos, sin)


def swiglu(gate, up):
    """silu(gate) * up."""
    if _use_triton(gate):
        return _triton("swiglu", gate).swiglu(gate, up)
    return reference.swiglu(gate, up)


def linear_cross_entropy(hidden, weight, targets, ignore_index: int = -100,
                         label_smoothing: float = 0.0, chunk_size: int = 4096):
    """Mean cross-entropy of ``hidden @ weight.T`` against ``targets`` without the full logits.

    hidden: (N, H), weight: (V, H), targets: (N,). Rows whose target is ``ignore_index`` are
    left out of the mean. Works in row chunks of ``chunk_size``; gradients for hidden and
    weight are computed chunk by chunk during the forward. Returns a float32 scalar.
    """
    if _use_triton(hidden):
        return _triton("fused_linear_ce", hidden).linear_cross_entropy(
            hidden, weight, targets, ignore_index, label_smoothing, chunk_size)
    return reference.linear_cross_entropy(hidden, weight, targets, ignore_index,
                                          label_smoothing, chunk_size)


def paged_attention(q, k_cache, v_cache, block_tables, context_lens, scale: float | None = None):
    """One query row per sequence over a paged KV cache (decode). q: (N, Hq, D); caches:
    (num_blocks, block_size, Hkv, D); block_tables: (N, M) block ids per sequence;
    context_lens: (N,), each >= 1. Returns (N, Hq, D). Inference only (no backward)."""
    if _use_triton(q):
        return _triton("paged_attention", q).paged_attention(q, k_cache, v_cache, block_tables, context_lens, scale)
    return reference.paged_attention(q, k_cache, v_cache, block_tables, context_lens, scale)


class _Package(types.ModuleType):
    """Keeps ``kernels.rms_norm``, ``kernels.swiglu`` and ``kernels.paged_attention`` the functions.

    Importing the submodule ``kernels/rms_norm.py`` makes Python set the package attribute
    ``rms_norm`` to that module, which would silently replace the public function for every
    later caller (the model). Submodules stay reachable through ``from kernels.rms_norm import``.
    """

    def __setattr__(self, name, value):
        if name in __all__ and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
