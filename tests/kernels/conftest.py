"""Kernel tests run the Triton kernels themselves; without CUDA, through Triton's interpreter.

TRITON_INTERPRET is read when ``@triton.jit`` decorates a function, i.e. when a kernel module
is first imported, so it must be set here, before any test module imports one. ``kernels``
imports its Triton modules lazily for exactly this reason.
"""

import os
import sys

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
    # the knob reads the environment each time; what was decorated at import time tells
    if "triton" in sys.modules and type(sys.modules["triton"].language.standard.sigmoid).__name__ == "JITFunction":
        raise RuntimeError("triton was imported before TRITON_INTERPRET was set (tests/conftest.py sets it); "
                           "run the kernel tests in their own process (make test-kernels)")

import pytest  # noqa: E402

import kernels  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_backend():
    before = kernels.get_backend()
    yield
    kernels.set_backend(before)
