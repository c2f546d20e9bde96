"""Shared helpers for the kernel tests: device, dtypes, tolerances, forward+backward runs."""

from __future__ import annotations

import pytest
import torch

from kernels._common import INTERPRET

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

BF16_SKIP = pytest.mark.skipif(
    INTERPRET, reason="bf16 gives wrong numbers under the Triton 3.9 interpreter without raising "
                      "(tl.dot on bf16 returns values ~1e8 off); covered on GPUs and by the sm_80/sm_90 compile tests")
DTYPES = [torch.float32, torch.float16, pytest.param(torch.bfloat16, marks=BF16_SKIP)]

# Tolerances per dtype, in the manner of Liger-Kernel's tests: the Triton kernel and the
# reference both compute in fp32 internally, so fp32 agrees to rounding; half precision
# differs by a few ulps of the result (inputs rounded to 10 or 7 mantissa bits, and
# attention rounds the probabilities to the input dtype before P @ V, as FA2 does).
TOL = {
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.float16: dict(atol=5e-3, rtol=5e-3),
    torch.bfloat16: dict(atol=5e-2, rtol=5e-2),
}
# Attention reduces over T keys and dK/dV over T queries: a looser fp32 bound.
ATTN_TOL = {**TOL, torch.float32: dict(atol=1e-4, rtol=1e-4), torch.float16: dict(atol=1e-2, rtol=1e-2)}


def leaves(*tensors):
    return [t.detach().clone().requires_grad_(t.is_floating_point()) for t in tensors]


def run_with_grads(fn, inputs, grad_outputs, **kwargs):
    """Call fn on fresh leaf copies of inputs, backprop grad_outputs; -> (outputs, input grads)."""
    xs = leaves(*inputs)
    out = fn(*xs, **kwargs)
    outs = out if isinstance(out, tuple) else (out,)
    torch.autograd.backward(outs, grad_outputs)
    return [o.detach() for o in outs], [x.grad for x in xs if x.requires_grad]


def assert_close(actual, expected, tol, what=""):
    for i, (a, e) in enumerate(zip(actual, expected)):
        torch.testing.assert_close(a.float(), e.float(), **tol, msg=lambda m: f"{what}[{i}]: {m}")
