"""The public interface: backend selection and dispatch."""

import pytest
import torch

import kernels
from tests.kernels.kernel_checks import DEVICE

TRITON_FUNCTIONS = {"attention": "FlashAttention", "rms_norm": "RMSNorm", "apply_rotary": "Rotary",
                    "swiglu": "SwiGLU", "linear_cross_entropy": "FusedLinearCrossEntropy"}


def _calls():
    torch.manual_seed(0)
    q = torch.randn(1, 2, 9, 32, device=DEVICE, requires_grad=True)
    kv = torch.randn(1, 1, 9, 32, device=DEVICE, requires_grad=True)
    x = torch.randn(3, 32, device=DEVICE, requires_grad=True)
    cos, sin = kernels.rotary_cos_sin(9, 32, device=DEVICE)
    targets = torch.tensor([1, 2, -100], device=DEVICE)
    return {
        "attention": lambda: kernels.attention(q, kv, kv),
        "rms_norm": lambda: kernels.rms_norm(x, torch.ones(32, device=DEVICE)),
        "apply_rotary": lambda: kernels.apply_rotary(q * 1, kv * 1, cos, sin)[0],
        "swiglu": lambda: kernels.swiglu(x, x),
        "linear_cross_entropy": lambda: kernels.linear_cross_entropy(x, torch.randn(7, 32, device=DEVICE), targets),
    }


def _grad_fn(out):
    return type(out.grad_fn).__name__


@pytest.mark.parametrize("backend", ["auto", "triton", "torch"])
def test_backend_picks_triton_on_cuda_or_when_forced(backend):
    kernels.set_backend(backend)
    assert kernels.get_backend() == backend
    use_triton = backend == "triton" or (backend == "auto" and DEVICE == "cuda")
    for name, call in _calls().items():
        fn = _grad_fn(call())
        assert fn.startswith(TRITON_FUNCTIONS[name]) == use_triton, (name, fn)


def test_reference_and_triton_agree_through_the_public_api():
    outs = {}
    for backend in ("torch", "triton"):
        kernels.set_backend(backend)
        outs[backend] = {name: call().detach() for name, call in _calls().items()}
    for name in TRITON_FUNCTIONS:
        torch.testing.assert_close(outs["triton"][name], outs["torch"][name], atol=1e-5, rtol=1e-5, msg=name)


def test_unknown_backend_is_rejected_by_name():
    with pytest.raises(ValueError, match="'cuda'.*auto, triton, torch"):
        kernels.set_backend("cuda")
    assert kernels.get_backend() == "auto"


def test_public_functions_survive_importing_their_modules():
    import kernels.rms_norm  # noqa: F401  (the import system would set kernels.rms_norm to the module)
    import kernels.swiglu  # noqa: F401

    assert callable(kernels.rms_norm) and callable(kernels.swiglu)
    from kernels.rms_norm import RMSNorm

    assert RMSNorm.__name__ == "RMSNorm"


def test_rotary_tables():
    cos, sin = kernels.rotary_cos_sin(5, 8, base=100.0, dtype=torch.float64)
    assert cos.shape == sin.shape == (5, 4) and cos.dtype == torch.float64
    inv_freq = 100.0 ** (-torch.arange(0, 8, 2, dtype=torch.float64) / 8)
    torch.testing.assert_close(sin[3], torch.sin(3 * inv_freq))
    torch.testing.assert_close(cos[0], torch.ones(4, dtype=torch.float64))


def test_forcing_triton_on_cpu_without_the_interpreter_says_why(repo):
    import os
    import subprocess
    import sys

    code = ("import torch, kernels\nkernels.set_backend('triton')\n"
            "kernels.swiglu(torch.randn(3), torch.randn(3))")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=repo, env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and "TRITON_INTERPRET=1" in proc.stderr, proc.stderr[-2000:]
