import pytest
import torch

from tests.kernels.kernel_checks import DEVICE, DTYPES, TOL, assert_close, run_with_grads
from kernels import reference
from kernels.swiglu import swiglu


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 123, 344), (1, 1, 5), (7, 3000)], ids=["mlp", "tiny", "flat-odd"])
def test_swiglu_matches_reference(shape, dtype):
    torch.manual_seed(0)
    gate, up, dout = (torch.randn(shape) * 4).to(DEVICE, dtype), torch.randn(shape).to(DEVICE, dtype), \
        torch.randn(shape).to(DEVICE, dtype)
    out, grads = run_with_grads(swiglu, (gate, up), dout)
    ref_out, ref_grads = run_with_grads(reference.swiglu, (gate, up), dout)
    assert out[0].dtype == dtype
    assert_close(out, ref_out, TOL[dtype], "out")
    assert_close(grads, ref_grads, TOL[dtype], "dgate,dup")


def test_swiglu_reference_is_silu_times_up():
    g, u = torch.randn(10, dtype=torch.float64), torch.randn(10, dtype=torch.float64)
    torch.testing.assert_close(reference.swiglu(g, u), torch.nn.functional.silu(g) * u)


def test_swiglu_non_contiguous_inputs():
    torch.manual_seed(0)
    gu = torch.randn(3, 50, 2 * 96, device=DEVICE)
    gate, up = gu[..., :96], gu[..., 96:]  # halves of one fused projection: strided views
    torch.testing.assert_close(swiglu(gate, up), reference.swiglu(gate, up))


def test_swiglu_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        swiglu(torch.randn(2, 3, device=DEVICE), torch.randn(2, 4, device=DEVICE))
