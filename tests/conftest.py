"""Shared fixtures. Tests keep torch to one thread: CI has two cores."""
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Triton reads TRITON_INTERPRET once, when `import triton` decorates its own library functions
# (tl.sigmoid, tl.max ... are @triton.jit too), and any test may import triton first
# (torch.compile, peft): set it here, before every test, so the kernel tests on CPU interpret
# both our kernels and the library functions they call. On a GPU machine it stays unset.
if "triton" not in sys.modules:
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def repo() -> Path:
    return REPO
